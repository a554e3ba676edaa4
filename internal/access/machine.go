package access

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// Bounds on free text, which ends up in the cluster and in every audit row of the request.
const (
	maxReasonBytes  = 1024
	maxTicketBytes  = 128
	maxCommentBytes = 1024
)

// Identity is an authenticated caller: the requester or a reviewer. It always comes from the
// caller's credential (authn), never from a request's fields.
type Identity struct {
	User   string
	UID    string
	Groups []string
	// SourceIP is where the call came from, for the audit record only.
	SourceIP string
}

// CreateInput is what a requester asks for.
type CreateInput struct {
	Elevation string
	// Namespaces are some of the elevation's; empty means all of them.
	Namespaces []string
	Duration   time.Duration
	Reason     string
	Ticket     string
}

// Action names a state change, in audit events.
type Action string

// Actions.
const (
	ActionCreated  Action = "created"
	ActionApproved Action = "approved" // one approval; the request may still be pending
	ActionDenied   Action = "denied"
	ActionRevoked  Action = "revoked"
	ActionExpired  Action = "expired"
)

// Transition is one step of the state machine: the new status and what it means.
type Transition struct {
	Action Action
	Status Status
	// GrantStarted: the request just became approved. GrantEnded: an approved request just
	// ended (revoked or expired).
	GrantStarted, GrantEnded bool
}

// elevation returns the elevation named name, or nil.
func elevation(p *policy.Policy, name string) *policy.Elevation {
	if p == nil {
		return nil
	}
	for i := range p.Elevations {
		if p.Elevations[i].Name == name {
			return &p.Elevations[i]
		}
	}
	return nil
}

// roleRef is the role an elevation grants, as the bindings name it.
func roleRef(p *policy.Policy, e *policy.Elevation) (RoleRef, bool) {
	for _, r := range p.Roles {
		if r.Name != e.Role {
			continue
		}
		if r.Ref != nil {
			return RoleRef{Kind: r.Ref.Kind, Name: r.Ref.Name}, true
		}
		return RoleRef{Kind: policy.RefKindClusterRole, Name: policy.ClusterRoleName(r.Name)}, true
	}
	return RoleRef{}, false
}

func inAny(groups, allowed []string) bool {
	for _, g := range groups {
		if slices.Contains(allowed, g) {
			return true
		}
	}
	return false
}

// sameperson compares by user name, and by UID as well when both have one.
func sameperson(a Identity, user, uid string) bool {
	if a.User != user {
		return false
	}
	return a.UID == "" || uid == "" || a.UID == uid
}

func approvalsOf(e *policy.Elevation) int {
	if e.Approvals == nil {
		return policy.DefaultApprovals
	}
	return *e.Approvals
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

func checkText(v *InvalidError, field, s string, limit int) {
	switch {
	case len(s) > limit:
		v.add(field, fmt.Sprintf("longer than %d bytes", limit))
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		v.add(field, "must be UTF-8 text without control characters")
	}
}

// secondsUTC is now as the cluster stores it (metav1.Time keeps whole seconds). Expiry times
// are computed from it, so a grant is never longer than asked.
func secondsUTC(now time.Time) metav1.Time {
	return metav1.NewTime(now.UTC().Truncate(time.Second))
}

// NewRequest checks in against the policy for caller and returns the request to store, pending
// until now+pendingTTL. name is the object's name.
func NewRequest(p *policy.Policy, caller Identity, in CreateInput, name string, now time.Time, pendingTTL time.Duration) (*AccessRequest, error) {
	v := &InvalidError{}
	if caller.User == "" {
		return nil, fmt.Errorf("%w: the caller has no user name", ErrForbidden)
	}
	e := elevation(p, in.Elevation)
	if in.Elevation == "" {
		v.add("elevation", "required: name one of the access policy's elevations")
	} else if e == nil {
		v.add("elevation", fmt.Sprintf("the access policy has no elevation %q", in.Elevation))
	}
	switch {
	case in.Duration <= 0:
		v.add("duration", "required and positive, such as 1h")
	case e != nil && in.Duration > e.MaxDurationValue():
		v.add("duration", fmt.Sprintf("%s exceeds the elevation's maximum of %s", in.Duration, e.MaxDuration))
	}
	if e != nil && boolOr(e.ReasonRequired, true) && strings.TrimSpace(in.Reason) == "" {
		v.add("reason", fmt.Sprintf("required by elevation %q: say why you need it", e.Name))
	}
	checkText(v, "reason", in.Reason, maxReasonBytes)
	checkText(v, "ticket", in.Ticket, maxTicketBytes)
	var namespaces []string
	if e != nil {
		switch {
		case e.ClusterWide && len(in.Namespaces) > 0:
			v.add("namespaces", fmt.Sprintf("elevation %q is cluster-wide: leave namespaces empty", e.Name))
		case !e.ClusterWide && len(in.Namespaces) == 0:
			namespaces = slices.Clone(e.Namespaces)
		case !e.ClusterWide:
			for i, ns := range in.Namespaces {
				field := fmt.Sprintf("namespaces[%d]", i)
				switch {
				case len(validation.IsDNS1123Label(ns)) > 0:
					v.add(field, fmt.Sprintf("%q is not a namespace name", ns))
				case !slices.Contains(e.Namespaces, ns):
					v.add(field, fmt.Sprintf("%q is outside elevation %q (%s)", ns, e.Name, strings.Join(e.Namespaces, ", ")))
				case slices.Contains(namespaces, ns):
					v.add(field, fmt.Sprintf("duplicate namespace %q", ns))
				default:
					namespaces = append(namespaces, ns)
				}
			}
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	// Fields first, so a requester learns every mistake at once; what they reveal to someone
	// who may not ask (an elevation's limits) is no secret.
	if !inAny(caller.Groups, e.Requesters) {
		return nil, fmt.Errorf("%w: %s is in none of elevation %q's requester groups (%s); ask your administrator",
			ErrForbidden, caller.User, e.Name, strings.Join(e.Requesters, ", "))
	}
	ref, ok := roleRef(p, e)
	if !ok {
		return nil, fmt.Errorf("%w: elevation %q names role %q, which the policy lacks", ErrForbidden, e.Name, e.Role)
	}
	slices.Sort(namespaces)
	ts := secondsUTC(now)
	until := metav1.NewTime(ts.Add(pendingTTL))
	return &AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ElevationLabel: e.Name}},
		Spec: Spec{
			Requester:   Requester{User: caller.User, UID: caller.UID, Groups: slices.Clone(caller.Groups)},
			Elevation:   e.Name,
			Namespaces:  namespaces,
			ClusterWide: e.ClusterWide,
			RoleRef:     ref,
			Duration:    in.Duration.String(),
			Reason:      in.Reason,
			Ticket:      in.Ticket,
			// Fixed now: lowering the policy's number later must not approve a request with
			// fewer approvals than its requester and approvers were told.
			ApprovalsRequired: approvalsOf(e),
		},
		Status: Status{State: StatePending, PendingUntil: &until},
	}, nil
}

// Expire returns the transition to expired if r is due at now: pending past its pendingUntil
// (ttl stands in when the status was never written), or approved at or past its expiresAt.
func Expire(r *AccessRequest, now time.Time, ttl time.Duration) (Transition, bool) {
	st := r.Status.clone()
	switch r.effectiveState() {
	case StatePending:
		if now.Before(r.pendingUntil(ttl)) {
			return Transition{}, false
		}
		st.State, st.PendingUntil = StateExpired, ptrTime(r.pendingUntil(ttl))
		st.EndedAt = ptrTime(secondsUTC(now).Time)
		return Transition{Action: ActionExpired, Status: st}, true
	case StateApproved:
		if r.Status.ExpiresAt != nil && now.Before(r.Status.ExpiresAt.Time) {
			return Transition{}, false
		}
		st.State = StateExpired
		st.EndedAt = ptrTime(secondsUTC(now).Time)
		return Transition{Action: ActionExpired, Status: st, GrantEnded: true}, true
	}
	return Transition{}, false
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// reviewable checks that r can still be reviewed at now and that reviewer may review it.
func reviewable(r *AccessRequest, e *policy.Elevation, reviewer Identity, verb string) error {
	switch s := r.effectiveState(); {
	case s == StateApproved:
		return fmt.Errorf("%w: %s is already approved; to end it, revoke it", ErrFinal, r.Name)
	case s.Final():
		return fmt.Errorf("%w: %s is %s, which is final", ErrFinal, r.Name, s)
	}
	if reviewer.User == "" {
		return fmt.Errorf("%w: the caller has no user name", ErrForbidden)
	}
	if e == nil {
		return fmt.Errorf("%w: elevation %q is no longer in the access policy, so nobody may %s %s",
			ErrForbidden, r.Spec.Elevation, verb, r.Name)
	}
	if !inAny(reviewer.Groups, e.Approvers) {
		return fmt.Errorf("%w: %s is in none of elevation %q's approver groups (%s)",
			ErrForbidden, reviewer.User, e.Name, strings.Join(e.Approvers, ", "))
	}
	for _, rv := range append(slices.Clone(r.Status.Approvals), r.Status.Denials...) {
		if sameperson(reviewer, rv.Reviewer, rv.UID) {
			return fmt.Errorf("%w: %s already reviewed %s; each approver has one vote", ErrFinal, reviewer.User, r.Name)
		}
	}
	return nil
}

// Approve adds reviewer's approval to the pending request r; once ApprovalsRequired distinct
// approvers approved, r is approved and expires at now + its duration. Call Expire first: a
// request due to expire must not be approved.
func Approve(r *AccessRequest, e *policy.Elevation, reviewer Identity, comment string, now time.Time) (Transition, error) {
	if err := reviewable(r, e, reviewer, "approve"); err != nil {
		return Transition{}, err
	}
	if sameperson(reviewer, r.Spec.Requester.User, r.Spec.Requester.UID) && !boolOr(e.AllowSelfApproval, false) {
		return Transition{}, fmt.Errorf("%w: %s cannot approve their own request; another approver of %q must",
			ErrForbidden, reviewer.User, e.Name)
	}
	v := &InvalidError{}
	checkText(v, "comment", comment, maxCommentBytes)
	if err := v.err(); err != nil {
		return Transition{}, err
	}
	ts := secondsUTC(now)
	st := r.Status.clone()
	st.State = StatePending
	st.Approvals = append(st.Approvals, Review{Reviewer: reviewer.User, UID: reviewer.UID, Time: ts, Comment: comment})
	t := Transition{Action: ActionApproved}
	need := max(r.Spec.ApprovalsRequired, 1)
	if len(st.Approvals) >= need {
		d := r.DurationValue()
		if d <= 0 {
			return Transition{}, fmt.Errorf("%w: %s has no valid duration (%q)", ErrFinal, r.Name, r.Spec.Duration)
		}
		st.State = StateApproved
		st.ApprovedAt = ptrTime(ts.Time)
		st.ExpiresAt = ptrTime(ts.Add(d))
		t.GrantStarted = true
	}
	t.Status = st
	return t, nil
}

// Deny ends the pending request r as denied: one denial wins, whatever approvals came before.
func Deny(r *AccessRequest, e *policy.Elevation, reviewer Identity, comment string, now time.Time) (Transition, error) {
	if err := reviewable(r, e, reviewer, "deny"); err != nil {
		return Transition{}, err
	}
	v := &InvalidError{}
	checkText(v, "comment", comment, maxCommentBytes)
	if err := v.err(); err != nil {
		return Transition{}, err
	}
	ts := secondsUTC(now)
	st := r.Status.clone()
	st.State = StateDenied
	st.Denials = append(st.Denials, Review{Reviewer: reviewer.User, UID: reviewer.UID, Time: ts, Comment: comment})
	st.EndedAt = ptrTime(ts.Time)
	return Transition{Action: ActionDenied, Status: st}, nil
}

// Revoke ends the pending or approved request r early. Its requester may, and so may any
// approver of its elevation (e may be nil if the elevation left the policy: then only the
// requester may). Call Expire first.
func Revoke(r *AccessRequest, e *policy.Elevation, caller Identity, now time.Time) (Transition, error) {
	if s := r.effectiveState(); s.Final() {
		return Transition{}, fmt.Errorf("%w: %s is %s, which is final", ErrFinal, r.Name, s)
	}
	if caller.User == "" {
		return Transition{}, fmt.Errorf("%w: the caller has no user name", ErrForbidden)
	}
	requester := sameperson(caller, r.Spec.Requester.User, r.Spec.Requester.UID)
	if !requester && (e == nil || !inAny(caller.Groups, e.Approvers)) {
		return Transition{}, fmt.Errorf("%w: only the requester or an approver of elevation %q may revoke %s",
			ErrForbidden, r.Spec.Elevation, r.Name)
	}
	st := r.Status.clone()
	wasApproved := r.effectiveState() == StateApproved
	st.State = StateRevoked
	st.RevokedBy = caller.User
	st.EndedAt = ptrTime(secondsUTC(now).Time)
	return Transition{Action: ActionRevoked, Status: st, GrantEnded: wasApproved}, nil
}
