package access

import (
	"errors"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

const machinePolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: db-admin
    rules:
      - apiGroups: [""]
        resources: ["secrets"]
        verbs: ["get"]
  - name: viewer
    ref: {kind: ClusterRole, name: view}
elevations:
  - name: db
    role: db-admin
    namespaces: [team-a, team-b]
    requesters: ["corp:devs"]
    approvers: ["corp:sre"]
    maxDuration: 4h
  - name: two
    role: viewer
    clusterWide: true
    requesters: ["corp:devs"]
    approvers: ["corp:sre", "corp:sec"]
    approvals: 2
    maxDuration: 1h
    reasonRequired: false
  - name: self
    role: db-admin
    namespaces: [team-a]
    requesters: ["corp:sre"]
    approvers: ["corp:sre"]
    allowSelfApproval: true
    maxDuration: 1h
`

var (
	t0    = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	alice = Identity{User: "alice", UID: "u-alice", Groups: []string{"corp:devs"}}
	bob   = Identity{User: "bob", UID: "u-bob", Groups: []string{"corp:sre"}}
	carol = Identity{User: "carol", UID: "u-carol", Groups: []string{"corp:sec"}}
	dave  = Identity{User: "dave", UID: "u-dave", Groups: []string{"corp:devs", "corp:sre"}}
	eve   = Identity{User: "eve", Groups: []string{"corp:other"}}
)

func loadPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Load([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newPending(t *testing.T, p *policy.Policy, who Identity, in CreateInput) *AccessRequest {
	t.Helper()
	r, err := NewRequest(p, who, in, in.Elevation+"-abcde", t0, time.Hour)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	r.Namespace = DefaultNamespace
	return r
}

func apply(r *AccessRequest, tr Transition) *AccessRequest {
	r.Status = tr.Status
	return r
}

func TestNewRequestChecksThePolicy(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	tests := []struct {
		name    string
		who     Identity
		in      CreateInput
		wantErr error  // sentinel, or nil for an *InvalidError
		want    string // in the message
	}{
		{"unknown elevation", alice, CreateInput{Elevation: "nope", Duration: time.Hour, Reason: "x"}, nil, `elevation: the access policy has no elevation "nope"`},
		{"no elevation", alice, CreateInput{Duration: time.Hour}, nil, "elevation: required"},
		{"no duration", alice, CreateInput{Elevation: "db", Reason: "x"}, nil, "duration: required"},
		{"too long", alice, CreateInput{Elevation: "db", Duration: 5 * time.Hour, Reason: "x"}, nil, "exceeds the elevation's maximum of 4h"},
		{"no reason", alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "  "}, nil, `reason: required by elevation "db"`},
		{"namespace outside", alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x", Namespaces: []string{"team-c"}}, nil, `namespaces[0]: "team-c" is outside elevation "db"`},
		{"duplicate namespace", alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x", Namespaces: []string{"team-a", "team-a"}}, nil, "namespaces[1]: duplicate"},
		{"namespaces on cluster-wide", alice, CreateInput{Elevation: "two", Duration: time.Hour, Namespaces: []string{"team-a"}}, nil, "is cluster-wide: leave namespaces empty"},
		{"control characters", alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x\x1b[2J"}, nil, "reason: must be UTF-8 text"},
		{"not a requester", eve, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x"}, ErrForbidden, `eve is in none of elevation "db"'s requester groups (corp:devs)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewRequest(p, tt.who, tt.in, "n", t0, time.Hour)
			if err == nil {
				t.Fatal("accepted")
			}
			var invalid *InvalidError
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) || tt.wantErr == nil && !errors.As(err, &invalid) {
				t.Errorf("error %T %v, want %v", err, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestNewRequestCopiesRoleAndScope(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	r := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: 90 * time.Minute, Reason: "incident", Ticket: "INC-1"})
	if r.Spec.Requester.User != "alice" || r.Spec.Requester.UID != "u-alice" || r.Spec.RoleRef != (RoleRef{"ClusterRole", "kaccess:db-admin"}) ||
		strings.Join(r.Spec.Namespaces, ",") != "team-a,team-b" || r.Spec.Duration != "1h30m0s" || r.Spec.ApprovalsRequired != 1 {
		t.Errorf("spec %+v", r.Spec)
	}
	if r.Status.State != StatePending || !r.Status.PendingUntil.Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("status %+v", r.Status)
	}
	two := newPending(t, p, alice, CreateInput{Elevation: "two", Duration: time.Hour})
	if !two.Spec.ClusterWide || two.Spec.RoleRef != (RoleRef{"ClusterRole", "view"}) || two.Spec.ApprovalsRequired != 2 || len(two.Spec.Namespaces) != 0 {
		t.Errorf("cluster-wide spec %+v", two.Spec)
	}
}

func TestApproveSetsAnAbsoluteExpiry(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	clk := testingclock.NewFakeClock(t0)
	r := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: 2 * time.Hour, Reason: "x"})
	clk.Step(10*time.Minute + 400*time.Millisecond)
	tr, err := Approve(r, elevation(p, "db"), bob, "ok", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := t0.Add(10 * time.Minute).Add(2 * time.Hour) // whole seconds: never longer than asked
	if tr.Status.State != StateApproved || !tr.GrantStarted || !tr.Status.ExpiresAt.Time.Equal(want) ||
		tr.Status.ExpiresAt.Location() != time.UTC || len(tr.Status.Approvals) != 1 || tr.Status.Approvals[0].Reviewer != "bob" {
		t.Fatalf("transition %+v", tr)
	}
	if len(r.Status.Approvals) != 0 {
		t.Error("Approve changed its input")
	}
}

func TestApproveRefusals(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	db := elevation(p, "db")
	pending := func() *AccessRequest {
		return newPending(t, p, dave, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x"})
	}
	tests := []struct {
		name    string
		r       *AccessRequest
		who     Identity
		wantErr error
		want    string
	}{
		{"self approval", pending(), dave, ErrForbidden, "cannot approve their own request"},
		{"self approval under another name, same UID", pending(), Identity{User: "dave", UID: "u-dave", Groups: []string{"corp:sre"}}, ErrForbidden, "own request"},
		{"not an approver", pending(), carol, ErrForbidden, `carol is in none of elevation "db"'s approver groups (corp:sre)`},
		{"no user", pending(), Identity{Groups: []string{"corp:sre"}}, ErrForbidden, "no user name"},
		{"already approved", apply(pending(), must(Approve(pending(), db, bob, "", t0))), Identity{User: "zoe", Groups: []string{"corp:sre"}}, ErrFinal, "already approved; to end it, revoke it"},
		{"denied", apply(pending(), must(Deny(pending(), db, bob, "", t0))), Identity{User: "zoe", Groups: []string{"corp:sre"}}, ErrFinal, "is denied, which is final"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Approve(tt.r, db, tt.who, "", t0)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %v saying %q", err, tt.wantErr, tt.want)
			}
		})
	}
	if _, err := Approve(pending(), nil, bob, "", t0); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "no longer in the access policy") {
		t.Errorf("elevation gone: %v", err)
	}
	if _, err := Approve(pending(), db, bob, strings.Repeat("x", 2000), t0); err == nil || !strings.Contains(err.Error(), "comment: longer than") {
		t.Errorf("long comment: %v", err)
	}
}

func must(tr Transition, err error) Transition {
	if err != nil {
		panic(err)
	}
	return tr
}

func TestNOfMApprovals(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	two := elevation(p, "two")
	r := newPending(t, p, alice, CreateInput{Elevation: "two", Duration: time.Hour})
	tr, err := Approve(r, two, bob, "", t0)
	if err != nil || tr.Status.State != StatePending || tr.GrantStarted {
		t.Fatalf("first approval: %+v %v", tr, err)
	}
	apply(r, tr)
	if _, err := Approve(r, two, bob, "", t0); !errors.Is(err, ErrFinal) || !strings.Contains(err.Error(), "one vote") {
		t.Fatalf("second vote of bob: %v", err)
	}
	tr, err = Approve(r, two, carol, "", t0.Add(time.Minute))
	if err != nil || tr.Status.State != StateApproved || !tr.GrantStarted || !tr.Status.ExpiresAt.Time.Equal(t0.Add(time.Hour+time.Minute)) {
		t.Fatalf("second approval: %+v %v", tr, err)
	}
}

func TestDenyWinsOverPartialApprovals(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	two := elevation(p, "two")
	r := newPending(t, p, alice, CreateInput{Elevation: "two", Duration: time.Hour})
	apply(r, must(Approve(r, two, bob, "", t0)))
	tr, err := Deny(r, two, carol, "not during the freeze", t0)
	if err != nil || tr.Status.State != StateDenied || tr.Status.Denials[0].Comment != "not during the freeze" || tr.Status.EndedAt == nil {
		t.Fatalf("deny: %+v %v", tr, err)
	}
	apply(r, tr)
	if _, err := Approve(r, two, Identity{User: "zoe", Groups: []string{"corp:sre"}}, "", t0); !errors.Is(err, ErrFinal) {
		t.Errorf("approve after deny: %v", err)
	}
	if _, err := Deny(newPending(t, p, alice, CreateInput{Elevation: "two", Duration: time.Hour}), two, eve, "", t0); !errors.Is(err, ErrForbidden) {
		t.Errorf("deny by a non-approver: %v", err)
	}
}

func TestSelfApprovalWhenAllowed(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	r := newPending(t, p, bob, CreateInput{Elevation: "self", Duration: time.Hour, Reason: "x"})
	tr, err := Approve(r, elevation(p, "self"), bob, "", t0)
	if err != nil || tr.Status.State != StateApproved {
		t.Fatalf("self approval with allowSelfApproval: %+v %v", tr, err)
	}
}

func TestExpireWithAFakeClock(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	clk := testingclock.NewFakeClock(t0)
	pending := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: 30 * time.Minute, Reason: "x"})
	clk.Step(time.Hour - time.Second)
	if _, due := Expire(pending, clk.Now(), time.Hour); due {
		t.Fatal("pending request expired before its pendingUntil")
	}
	clk.Step(time.Second)
	tr, due := Expire(pending, clk.Now(), time.Hour)
	if !due || tr.Status.State != StateExpired || tr.GrantEnded || tr.Action != ActionExpired {
		t.Fatalf("pending at pendingUntil: %+v %v", tr, due)
	}

	// A request whose status was never written is pending until creation + TTL.
	bare := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: 30 * time.Minute, Reason: "x"})
	bare.Status = Status{}
	bare.CreationTimestamp = *ptrTime(t0)
	if _, due := Expire(bare, t0.Add(59*time.Minute), time.Hour); due {
		t.Error("bare request expired early")
	}
	if _, due := Expire(bare, t0.Add(time.Hour), time.Hour); !due {
		t.Error("bare request did not expire at creation + TTL")
	}

	clk = testingclock.NewFakeClock(t0)
	r := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: 30 * time.Minute, Reason: "x"})
	apply(r, must(Approve(r, elevation(p, "db"), bob, "", clk.Now())))
	if !r.ActiveAt(clk.Now()) {
		t.Fatal("approved request not active")
	}
	clk.Step(30*time.Minute - time.Nanosecond)
	if _, due := Expire(r, clk.Now(), time.Hour); due || !r.ActiveAt(clk.Now()) {
		t.Fatal("grant ended early")
	}
	clk.Step(time.Nanosecond)
	if r.ActiveAt(clk.Now()) {
		t.Fatal("grant still active at expiresAt")
	}
	tr, due = Expire(r, clk.Now(), time.Hour)
	if !due || tr.Status.State != StateExpired || !tr.GrantEnded {
		t.Fatalf("approved at expiresAt: %+v %v", tr, due)
	}
	apply(r, tr)
	if _, due := Expire(r, clk.Now().Add(time.Hour), time.Hour); due {
		t.Error("expired twice")
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	db := elevation(p, "db")
	approved := func() *AccessRequest {
		r := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x"})
		return apply(r, must(Approve(r, db, bob, "", t0)))
	}
	for _, who := range []Identity{alice, bob} {
		tr, err := Revoke(approved(), db, who, t0.Add(time.Minute))
		if err != nil || tr.Status.State != StateRevoked || tr.Status.RevokedBy != who.User || !tr.GrantEnded {
			t.Errorf("revoke by %s: %+v %v", who.User, tr, err)
		}
	}
	if _, err := Revoke(approved(), db, eve, t0); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "only the requester or an approver") {
		t.Errorf("revoke by a stranger: %v", err)
	}
	pending := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "x"})
	tr, err := Revoke(pending, nil, alice, t0)
	if err != nil || tr.GrantEnded || tr.Status.State != StateRevoked {
		t.Errorf("requester withdraws a pending request whose elevation left the policy: %+v %v", tr, err)
	}
	if _, err := Revoke(apply(pending, tr), db, alice, t0); !errors.Is(err, ErrFinal) {
		t.Errorf("revoke twice: %v", err)
	}
}

func TestEventsOfATransition(t *testing.T) {
	t.Parallel()
	p := loadPolicy(t, machinePolicy)
	r := newPending(t, p, alice, CreateInput{Elevation: "db", Duration: time.Hour, Reason: "incident 7", Ticket: "INC-7"})
	tr := must(Approve(r, elevation(p, "db"), bob, "go", t0))
	evs := events(r, tr, bob, "go", t0)
	if len(evs) != 2 || evs[0].Kind != event.KindAccessRequest || evs[1].Kind != event.KindGrant {
		t.Fatalf("events %+v", evs)
	}
	x := evs[0].Extra
	if x["request"] != r.Name || x["elevation"] != "db" || x["action"] != "approved" || x["reviewer"] != "bob" ||
		x["reason"] != "incident 7" || x["ticket"] != "INC-7" || x["requester"] != "alice" || x["expires_at"] != "2026-03-01T10:30:00Z" {
		t.Errorf("extra %v", x)
	}
	if evs[0].User != "bob" || evs[1].Extra["group"] != "kaccess:grant:"+r.Name || evs[0].GrantIDs[0] != r.Name {
		t.Errorf("events %+v", evs)
	}
	apply(r, tr)
	end := must(Revoke(r, elevation(p, "db"), alice, t0))
	evs = events(r, end, alice, "", t0)
	if len(evs) != 2 || evs[1].Kind != event.KindGrantRevoked || evs[0].Extra["action"] != "revoked" {
		t.Errorf("revoke events %+v", evs)
	}
}
