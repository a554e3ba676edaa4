package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// The whole life of a grant on a real API server, as the gateway's identity: refusals,
// approval, a binding that the authorizer honours, the Grants cache, revocation.
func TestApprovedRequestBindsTheRoleToTheGrantGroup(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.startController(t, ControllerConfig{})
	grants, err := NewGrants(GrantsConfig{Client: e.dyn, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go grants.Run(gctx)
	if !grants.WaitForSync(gctx) {
		t.Fatal("grants cache did not sync")
	}

	r, err := e.svc.Create(ctx, dave, CreateInput{Elevation: "cm", Duration: time.Hour, Reason: "incident 42", Ticket: "INC-42", Namespaces: []string{"grant-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Namespace != DefaultNamespace || r.Status.State != StatePending || r.Spec.Requester.User != "dave" {
		t.Fatalf("created %+v", r)
	}
	// dave is in corp:sre too, but may not approve his own request.
	if _, err := e.svc.Approve(ctx, dave, r.Name, ""); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "own request") {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := e.svc.Approve(ctx, carol, r.Name, ""); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "approver groups (corp:sre)") {
		t.Fatalf("approver outside the approvers group: %v", err)
	}
	if got, _ := e.svc.Get(ctx, carol, r.Name); got != nil {
		t.Fatal("a stranger may read the request")
	}
	if ok, _ := e.allowed(ctx, "dave", r.Name, "grant-a"); ok {
		t.Fatal("allowed before approval")
	}
	toReview, err := e.svc.List(ctx, bob, ScopeToReview)
	if err != nil || !slices.ContainsFunc(toReview, func(x *AccessRequest) bool { return x.Name == r.Name }) {
		t.Fatalf("bob's review list lacks %s: %v", r.Name, err)
	}

	approved, err := e.svc.Approve(ctx, bob, r.Name, "go ahead")
	if err != nil {
		t.Fatal(err)
	}
	if approved.Status.State != StateApproved || approved.Status.ExpiresAt == nil {
		t.Fatalf("approved %+v", approved.Status)
	}
	eventually(t, 15*time.Second, "the grant allows dave in grant-a", func() error {
		ok, err := e.allowed(ctx, "dave", r.Name, "grant-a")
		if err == nil && !ok {
			err = errNotYet
		}
		return err
	})
	rb, err := e.c.AdminClient().RbacV1().RoleBindings("grant-a").Get(ctx, GrantGroup(r.Name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Labels[policy.ManagedByLabel] != policy.ManagedByValue || rb.Labels[GrantLabel] != r.Name || rb.Labels[policy.RoleLabel] != "" ||
		rb.RoleRef.Name != "kaccess:grant-reader" || rb.Subjects[0].Name != "kaccess:grant:"+r.Name {
		t.Errorf("binding %+v", rb)
	}
	if ok, _ := e.bindingExists(ctx, r.Name, "grant-b"); ok {
		t.Error("bound in grant-b, which was not asked for")
	}
	eventually(t, 5*time.Second, "the grants cache sees the grant", func() error {
		gs := grants.ActiveGrants("dave", time.Now())
		if len(gs) != 1 || gs[0].Group != GrantGroup(r.Name) || gs[0].Request != r.Name {
			return fmt.Errorf("%+v", gs)
		}
		return nil
	})
	// The gateway stops adding the group at expiresAt on its own, whatever the controller does.
	if gs := grants.ActiveGrants("dave", approved.Status.ExpiresAt.Time); len(gs) != 0 {
		t.Errorf("grant active at its expiry: %+v", gs)
	}
	if gs := grants.ActiveGrants("bob", time.Now()); len(gs) != 0 {
		t.Errorf("bob has dave's grant: %+v", gs)
	}
	mine, err := e.svc.Grants(ctx, dave)
	if err != nil || len(mine) != 1 {
		t.Errorf("Service.Grants: %+v %v", mine, err)
	}

	if _, err := e.svc.Revoke(ctx, dave, r.Name, "done early"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "revocation deletes the binding", func() error {
		if ok, err := e.bindingExists(ctx, r.Name, "grant-a"); err != nil || ok {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	eventually(t, 5*time.Second, "the grants cache drops the revoked grant", func() error {
		if gs := grants.ActiveGrants("dave", time.Now()); len(gs) != 0 {
			return fmt.Errorf("%+v", gs)
		}
		return nil
	})
	// The two refused approvals are on the record too, as refused, with why.
	want := []string{"access_request/created", "access_request/approve", "access_request/approve", "access_request/approved",
		"grant/approved", "access_request/revoked", "grant_revoked/revoked"}
	if got := e.rec.actions(r.Name); !slices.Equal(got, want) {
		t.Errorf("audit events %v, want %v", got, want)
	}
	var refusals []string
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	for _, ev := range e.rec.events {
		if ev.Extra["request"] == r.Name && ev.Decision == event.DecisionRefused {
			refusals = append(refusals, fmt.Sprint(ev.User, " ", ev.ResponseCode, " ", ev.RefusalReason))
		}
	}
	if want := []string{"dave 403 self_approval", "carol 403 not_an_approver"}; !slices.Equal(refusals, want) {
		t.Errorf("refused approvals recorded as %v, want %v", refusals, want)
	}
}

func TestDenyWinsOnTheCluster(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	r, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm-all", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Approve(ctx, bob, r.Name, ""); err != nil {
		t.Fatal(err)
	}
	denied, err := e.svc.Deny(ctx, carol, r.Name, "no")
	if err != nil || denied.Status.State != StateDenied || len(denied.Status.Approvals) != 1 {
		t.Fatalf("deny after a partial approval: %+v %v", denied, err)
	}
	if _, err := e.svc.Approve(ctx, Identity{User: "zoe", Groups: []string{"corp:sec"}}, r.Name, ""); !errors.Is(err, ErrFinal) {
		t.Errorf("approve after deny: %v", err)
	}
}

func TestAuditFailureRefusesTheChange(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.rec.setFail(errors.New("spool full"))
	if _, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: time.Hour, Reason: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("create with a failing audit: %v", err)
	}
	e.rec.setFail(nil)
	r, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	e.rec.setFail(errors.New("spool full"))
	if _, err := e.svc.Approve(ctx, bob, r.Name, ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("approve with a failing audit: %v", err)
	}
	got, err := e.svc.Get(ctx, alice, r.Name)
	if err != nil || got.Status.State != StatePending || len(got.Status.Approvals) != 0 {
		t.Fatalf("the unrecorded approval was stored: %+v %v", got, err)
	}
	// Revocation only takes access away: it happens anyway.
	if got, err := e.svc.Revoke(ctx, alice, r.Name, ""); err != nil || got.Status.State != StateRevoked {
		t.Fatalf("revoke with a failing audit: %+v %v", got, err)
	}
}

// A 3-second grant: the controller marks the request expired and deletes the binding.
func TestShortGrantExpires(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.startController(t, ControllerConfig{})
	r, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: 3 * time.Second, Reason: "quick look"})
	if err != nil {
		t.Fatal(err)
	}
	approved, err := e.svc.Approve(ctx, bob, r.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "binding created", func() error {
		if ok, err := e.bindingExists(ctx, r.Name, "grant-b"); err != nil || !ok {
			return fmt.Errorf("missing (%v)", err)
		}
		return nil
	})
	eventually(t, 15*time.Second, "request expired and binding deleted", func() error {
		got, err := e.svc.Get(ctx, alice, r.Name)
		if err != nil {
			return err
		}
		if got.Status.State != StateExpired {
			return fmt.Errorf("state %s", got.Status.State)
		}
		for _, ns := range []string{"grant-a", "grant-b"} {
			if ok, err := e.bindingExists(ctx, r.Name, ns); err != nil || ok {
				return fmt.Errorf("binding in %s still there (%v)", ns, err)
			}
		}
		return nil
	})
	if time.Now().Before(approved.Status.ExpiresAt.Time) {
		t.Fatal("expired before expiresAt")
	}
	if got := e.rec.actions(r.Name); !slices.Contains(got, "grant_revoked/expired") {
		t.Errorf("audit events %v lack the grant's end", got)
	}
}

// A binding left by a request that expired while no controller ran goes at start-up.
func TestSweepAtStartRemovesLeftovers(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	r, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: 2 * time.Second, Reason: "x", Namespaces: []string{"grant-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Approve(ctx, bob, r.Name, ""); err != nil {
		t.Fatal(err)
	}
	// As if a controller had bound it and then stopped.
	leftover := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: GrantGroup(r.Name), Namespace: "grant-a", Labels: grantLabels(r.Name)},
		Subjects:   grantSubjects(r.Name),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kaccess:grant-reader"},
	}
	if _, err := e.c.AdminClient().RbacV1().RoleBindings("grant-a").Create(ctx, leftover, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// And one of a request that no longer exists at all.
	orphan := leftover.DeepCopy()
	orphan.Name, orphan.Labels = GrantGroup("gone-12345"), grantLabels("gone-12345")
	if _, err := e.c.AdminClient().RbacV1().RoleBindings("grant-a").Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the grant's own 2 seconds, with no controller running
	e.startController(t, ControllerConfig{})
	eventually(t, 10*time.Second, "leftover bindings swept", func() error {
		for _, name := range []string{r.Name, "gone-12345"} {
			if ok, err := e.bindingExists(ctx, name, "grant-a"); err != nil || ok {
				return fmt.Errorf("binding of %s still there (%v)", name, err)
			}
		}
		got, err := e.svc.Get(ctx, alice, r.Name)
		if err != nil || got.Status.State != StateExpired {
			return fmt.Errorf("request %v %v", got.Status.State, err)
		}
		return nil
	})
}

// The controller requeues a grant exactly at its expiresAt: with a fake clock and no periodic
// sweep, stepping the clock to the expiry ends it; nothing waits for real time to pass.
func TestControllerEndsTheGrantAtExpiresAtOnItsClock(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	clk := testingclock.NewFakeClock(time.Now())
	svc, err := NewService(ServiceConfig{Client: e.dyn, Policy: e.p, Recorder: e.rec, Logger: e.log, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	e.startController(t, ControllerConfig{Clock: clk, SweepPeriod: 24 * time.Hour})
	r, err := svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: time.Hour, Reason: "x", Namespaces: []string{"grant-b"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Approve(ctx, bob, r.Name, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "binding created", func() error {
		if ok, err := e.bindingExists(ctx, r.Name, "grant-b"); err != nil || !ok {
			return fmt.Errorf("missing (%v)", err)
		}
		return nil
	})
	clk.Step(time.Hour)
	eventually(t, 10*time.Second, "grant ended at expiresAt", func() error {
		if ok, err := e.bindingExists(ctx, r.Name, "grant-b"); err != nil || ok {
			return fmt.Errorf("binding still there (%v)", err)
		}
		got, err := svc.Get(ctx, alice, r.Name)
		if err != nil || got.Status.State != StateExpired {
			return fmt.Errorf("request %v %v", got.Status.State, err)
		}
		return nil
	})
}

// What approvers approved cannot change under them, even for a writer with full rights.
func TestSpecIsImmutable(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	r, err := e.svc.Create(ctx, alice, CreateInput{Elevation: "cm", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := dynamic.NewForConfig(e.c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	u, err := admin.Resource(GVR).Namespace(DefaultNamespace).Get(ctx, r.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(u.Object, "24h", "spec", "duration"); err != nil {
		t.Fatal(err)
	}
	_, err = admin.Resource(GVR).Namespace(DefaultNamespace).Update(ctx, u, metav1.UpdateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec is immutable") {
		t.Fatalf("spec update: %v", err)
	}
	// The gateway itself may not delete requests: they are the record of who asked.
	if err := e.dyn.Resource(GVR).Namespace(DefaultNamespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("delete as the gateway: %v", err)
	}
}
