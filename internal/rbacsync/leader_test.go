package rbacsync_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/testenv"
)

const leaderPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: lead-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get"]
`

func TestOnlyTheLeaderWrites(t *testing.T) {
	c := testenv.Shared(t)
	cleanManaged(t)
	ctx := context.Background()
	p := mustPolicy(t, leaderPolicy)
	// The shipped lease name and namespace, as the gateway identity: the shipped RBAC must
	// allow exactly this.
	lc := func(id string) rbacsync.LeaderConfig {
		return rbacsync.LeaderConfig{Namespace: "kaccess-system", Identity: id,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond}
	}
	type replica struct {
		ctrl *rbacsync.Controller
		rec  *recorder
		stop func()
	}
	replicas := map[string]*replica{}
	for _, id := range []string{"replica-a", "replica-b"} {
		ctrl, rec := newController(t, gatewayClient(t), p)
		r := &replica{ctrl: ctrl, rec: rec}
		r.stop = start(t, func(ctx context.Context) error { return ctrl.RunLeaderElected(ctx, lc(id)) })
		replicas[id] = r
	}
	holder := func() (string, error) {
		l, err := c.AdminClient().CoordinationV1().Leases("kaccess-system").Get(ctx, rbacsync.DefaultLeaseName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if l.Spec.HolderIdentity == nil {
			return "", nil
		}
		return *l.Spec.HolderIdentity, nil
	}
	converged(t, p)
	leader, err := holder()
	if err != nil {
		t.Fatal(err)
	}
	follower := map[string]string{"replica-a": "replica-b", "replica-b": "replica-a"}[leader]
	if follower == "" {
		t.Fatalf("lease holder %q is neither replica", leader)
	}
	// Drift while both run: the leader repairs it, the follower writes nothing.
	rbac := c.AdminClient().RbacV1()
	deleteAndWaitBack := func() {
		t.Helper()
		if err := rbac.ClusterRoles().Delete(ctx, "kaccess:lead-reader", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "ClusterRole back", func() error {
			_, err := rbac.ClusterRoles().Get(ctx, "kaccess:lead-reader", metav1.GetOptions{})
			return err
		})
	}
	deleteAndWaitBack()
	// OnChange runs just after the write the test already sees: wait for it.
	eventually(t, 5*time.Second, "the leader records the create and the repair", func() error {
		if n := replicas[leader].rec.count(); n < 2 {
			return fmt.Errorf("leader %s applied %d changes", leader, n)
		}
		return nil
	})
	if n := replicas[follower].rec.count(); n != 0 {
		t.Fatalf("follower %s applied %d changes: %v", follower, n, actions(replicas[follower].rec.all()))
	}

	// The leader stops: it releases the Lease and the follower takes over at once.
	leaderChanges := replicas[leader].rec.count()
	stoppedAt := time.Now()
	replicas[leader].stop()
	eventually(t, 10*time.Second, "follower takes the Lease", func() error {
		h, err := holder()
		if err != nil {
			return err
		}
		if h != follower {
			return fmt.Errorf("holder %q", h)
		}
		return nil
	})
	t.Logf("take-over %s after the leader stopped", time.Since(stoppedAt).Round(time.Millisecond))
	deleteAndWaitBack()
	eventually(t, 5*time.Second, "the new leader records the repair", func() error {
		if n := replicas[follower].rec.count(); n == 0 {
			return fmt.Errorf("new leader %s repaired nothing", follower)
		}
		return nil
	})
	if n := replicas[leader].rec.count(); n != leaderChanges {
		t.Errorf("stopped leader %s kept writing: %d -> %d changes", leader, leaderChanges, n)
	}
}
