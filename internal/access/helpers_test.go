package access

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

// A real kube-apiserver with the shipped CRD and the gateway's shipped RBAC. The unit tests of
// the package ignore it.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithCluster())) }

// clusterPolicy grants the curated role grant-reader (made by hand here: rbacsync is not
// running) in the namespaces grant-a and grant-b.
const clusterPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: grant-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
elevations:
  - name: cm
    role: grant-reader
    namespaces: [grant-a, grant-b]
    requesters: ["corp:devs"]
    approvers: ["corp:sre"]
    maxDuration: 1h
  - name: cm-all
    role: grant-reader
    clusterWide: true
    requesters: ["corp:devs"]
    approvers: ["corp:sre", "corp:sec"]
    approvals: 2
    maxDuration: 1h
`

// recorder keeps events; fail, when set, makes Record fail.
type recorder struct {
	mu     sync.Mutex
	events []*event.Event
	fail   error
}

func (r *recorder) Record(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

// actions returns "kind/action" of the events about request name.
func (r *recorder) actions(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Extra["request"] == name {
			out = append(out, string(e.Kind)+"/"+e.Extra["action"])
		}
	}
	return out
}

type env struct {
	c    *testenv.Cluster
	kube kubernetes.Interface // the gateway's identity
	dyn  dynamic.Interface    // the gateway's identity
	p    *policy.Policy
	rec  *recorder
	svc  *Service
	log  *slog.Logger
}

// setup connects as the gateway (with exactly the shipped RBAC) and makes the policy's
// namespaces and ClusterRole.
func setup(t *testing.T) *env {
	t.Helper()
	c := testenv.Shared(t)
	for _, ns := range []string{"grant-a", "grant-b"} {
		c.MustNamespace(t, ns)
	}
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: policy.ClusterRoleName("grant-reader")},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}}}
	if _, err := c.AdminClient().RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(c.GatewayConfig())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.GatewayConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{c: c, kube: kube, dyn: dyn, p: loadPolicy(t, clusterPolicy), rec: &recorder{},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.svc, err = NewService(ServiceConfig{Client: dyn, Policy: e.p, Recorder: e.rec, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startController runs the grant controller until the test ends. Tests that run one do not
// run in parallel: two controllers would sweep each other's bindings.
func (e *env) startController(t *testing.T, cfg ControllerConfig) *Controller {
	t.Helper()
	cfg.Kube, cfg.Client, cfg.Recorder, cfg.Logger = e.kube, e.dyn, e.rec, e.log
	ctl, err := NewController(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	return ctl
}

// eventually polls f every 50ms until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allowed asks the API server whether user, with the grant group of request, may list
// configmaps in namespace.
func (e *env) allowed(ctx context.Context, user, request, namespace string) (bool, error) {
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user, Groups: []string{"corp:devs", GrantGroup(request)},
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: namespace, Verb: "list", Resource: "configmaps"},
	}}
	got, err := e.c.AdminClient().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return got.Status.Allowed, nil
}

// bindingState says whether the RoleBinding of request exists in namespace.
func (e *env) bindingExists(ctx context.Context, request, namespace string) (bool, error) {
	_, err := e.c.AdminClient().RbacV1().RoleBindings(namespace).Get(ctx, GrantGroup(request), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

var errNotYet = errors.New("not yet")
