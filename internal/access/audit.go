package access

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Recorder puts a state change on the audit record (the shape of apiserver.Recorder). An error
// means it is not recorded: a change that adds access is then not made.
type Recorder interface {
	Record(e *event.Event) error
}

// RecorderFunc adapts a function to Recorder.
type RecorderFunc func(e *event.Event) error

// Record calls f.
func (f RecorderFunc) Record(e *event.Event) error { return f(e) }

// eventSource names kaccess's own state changes in the Source column.
const eventSource = "kaccess"

// events returns the audit events of transition t of r made by actor at now: one
// KindAccessRequest event, plus KindGrant when the grant starts or KindGrantRevoked when it
// ends.
func events(r *AccessRequest, t Transition, actor Identity, comment string, now time.Time) []*event.Event {
	extra := map[string]string{
		"request":   r.Name,
		"elevation": r.Spec.Elevation,
		"action":    string(t.Action),
		"state":     string(t.Status.State),
		"requester": r.Spec.Requester.User,
		"role":      r.Spec.RoleRef.String(),
		"duration":  r.Spec.Duration,
	}
	// The grant's id and scope, as detections read them (internal/audit/detect: grant events).
	extra["grant_id"] = r.Name
	if r.Spec.ClusterWide {
		extra["cluster_wide"] = "true"
	} else {
		extra["namespaces"] = strings.Join(r.Spec.Namespaces, ",")
	}
	if r.Spec.Reason != "" {
		extra["reason"] = r.Spec.Reason
	}
	if r.Spec.Ticket != "" {
		extra["ticket"] = r.Spec.Ticket
	}
	if comment != "" {
		extra["comment"] = comment
	}
	switch t.Action {
	case ActionApproved, ActionDenied, ActionRevoked:
		extra["reviewer"] = actor.User
		extra["approvals"] = strconv.Itoa(len(t.Status.Approvals)) + "/" + strconv.Itoa(r.Spec.ApprovalsRequired)
	}
	if t.Status.ExpiresAt != nil {
		extra["expires_at"] = t.Status.ExpiresAt.UTC().Format(time.RFC3339)
	}
	mk := func(kind event.Kind) *event.Event {
		e := event.New(kind, now)
		e.Source = eventSource
		e.User, e.UID, e.SourceIP = actor.User, actor.UID, actor.SourceIP
		if actor.User != "" {
			e.Groups = append([]string(nil), actor.Groups...)
		}
		e.APIGroup, e.APIVersion, e.Resource = Group, Version, Resource
		e.Namespace, e.Name = r.Namespace, r.Name
		e.GrantIDs = []string{r.Name}
		// What the API answered the person who made the change (200: AccessService answers
		// creates with the request, as Google APIs do), or, for an expiry, what the API
		// server answered the controller's status update.
		e.SetStateOutcome(http.StatusOK, "")
		e.Extra = make(map[string]string, len(extra)+1)
		for k, v := range extra {
			e.Extra[k] = v
		}
		return e
	}
	out := []*event.Event{mk(event.KindAccessRequest)}
	if t.GrantStarted {
		g := mk(event.KindGrant)
		g.Extra["group"] = GrantGroup(r.Name)
		out = append(out, g)
	}
	if t.GrantEnded {
		g := mk(event.KindGrantRevoked)
		g.Extra["group"] = GrantGroup(r.Name)
		out = append(out, g)
	}
	return out
}

// refusedEvent is the audit event of a review or revocation the caller was refused (verb
// approve, deny or revoke): 403, as the API answers it, and why. A person approving their own
// request or one they are no approver of is worth seeing, even though nothing changed.
func refusedEvent(r *AccessRequest, verb string, actor Identity, comment string, refusal error, now time.Time) *event.Event {
	e := events(r, Transition{Action: Action(verb), Status: r.Status}, actor, comment, now)[0]
	e.Extra["refused"] = refusal.Error()
	reason := "not_an_approver"
	switch {
	case verb == "revoke":
		reason = "not_requester_or_approver"
	case verb == "approve" && sameperson(actor, r.Spec.Requester.User, r.Spec.Requester.UID):
		reason = "self_approval"
	}
	e.SetStateOutcome(http.StatusForbidden, reason)
	return e
}

// record records every event; the first failure stops it and is returned.
func record(rec Recorder, evs []*event.Event) error {
	for _, e := range evs {
		if err := rec.Record(e); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return nil
}

type discard struct{}

func (discard) Record(*event.Event) error { return nil }
