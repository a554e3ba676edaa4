package rbacsync_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

// The tests of this package run one after another, not in parallel: a controller prunes every
// managed object its policy does not name, so two tests' controllers would undo each other.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithCluster())) }

// repairDeadline is how long drift may take to be repaired; it is usually well under a second.
const repairDeadline = 5 * time.Second

// recorder collects the changes a controller reports through OnChange.
type recorder struct {
	mu      sync.Mutex
	changes []policy.Change
}

func (r *recorder) record(c policy.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) all() []policy.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.Change(nil), r.changes...)
}

func (r *recorder) count() int { return len(r.all()) }

func mustPolicy(t *testing.T, y string) *policy.Policy {
	t.Helper()
	p, err := policy.Load([]byte(y))
	if err != nil {
		t.Fatalf("policy.Load: %v", err)
	}
	return p
}

func clientFor(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// gatewayClient is the gateway's own identity with exactly the shipped RBAC: the controller
// runs as it, so the tests prove deploy/kubernetes/rbac.yaml grants enough.
func gatewayClient(t *testing.T) kubernetes.Interface {
	return clientFor(t, testenv.Shared(t).GatewayConfig())
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter sends log lines to t.Log, so they show with the failing test only.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// newController returns a controller for p as client, recording its changes.
func newController(t *testing.T, client kubernetes.Interface, p *policy.Policy) (*rbacsync.Controller, *recorder) {
	t.Helper()
	rec := &recorder{}
	c, err := rbacsync.New(rbacsync.Config{Client: client, Policy: p, Logger: testLogger(t), OnChange: rec.record,
		MinRetry: 100 * time.Millisecond, MaxRetry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// start runs fn in the background until the test ends (or the returned stop is called).
func start(t *testing.T, fn func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("controller did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// cleanManaged deletes every managed object when the test ends, so the next test starts from
// a cluster without them.
func cleanManaged(t *testing.T) {
	t.Cleanup(func() {
		ctx := context.Background()
		rbac := testenv.Shared(t).AdminClient().RbacV1()
		opts := metav1.ListOptions{LabelSelector: policy.ManagedByLabel + "=" + policy.ManagedByValue}
		errs := []error{
			rbac.ClusterRoles().DeleteCollection(ctx, metav1.DeleteOptions{}, opts),
			rbac.ClusterRoleBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, opts),
		}
		nss, err := testenv.Shared(t).AdminClient().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		errs = append(errs, err)
		if err == nil {
			for _, ns := range nss.Items {
				errs = append(errs, rbac.RoleBindings(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, opts),
					rbac.Roles(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, opts))
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("clean managed objects: %v", err)
		}
	})
}

// eventually polls fn every 50ms until it returns nil, failing the test with its last error
// after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converged waits until the cluster matches p (an empty plan, read as admin).
func converged(t *testing.T, p *policy.Policy) {
	t.Helper()
	admin := testenv.Shared(t).AdminClient()
	eventually(t, 20*time.Second, "cluster matches the policy", func() error {
		cs, err := rbacsync.PlanCluster(context.Background(), admin, p)
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			return fmt.Errorf("%d changes pending, first %s %s %s/%s", len(cs), cs[0].Action, cs[0].Kind, cs[0].Namespace, cs[0].Name)
		}
		return nil
	})
}

// asUser returns a client for the gateway's identity impersonating user in groups: what a
// person's kubectl gets through the gateway.
func asUser(t *testing.T, user string, groups ...string) kubernetes.Interface {
	cfg := testenv.Shared(t).GatewayConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return clientFor(t, cfg)
}

func labelledNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	c := testenv.Shared(t)
	c.MustNamespace(t, name)
	ns, err := c.AdminClient().CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	if _, err := c.AdminClient().CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func getRB(t *testing.T, ns, name string) (*rbacv1.RoleBinding, error) {
	return testenv.Shared(t).AdminClient().RbacV1().RoleBindings(ns).Get(context.Background(), name, metav1.GetOptions{})
}
