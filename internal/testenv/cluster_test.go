package testenv_test

import (
	"context"
	"os"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithCluster(m)) }

var readConfigMaps = []rbacv1.PolicyRule{{
	APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"},
}}

// gatewayAs returns a clientset for the gateway's own token impersonating imp.
func gatewayAs(t *testing.T, c *testenv.Cluster, imp rest.ImpersonationConfig) kubernetes.Interface {
	t.Helper()
	cfg := c.GatewayConfig()
	cfg.Impersonate = imp
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// listConfigMaps lists configmaps in ns and returns the error, nil when allowed.
func listConfigMaps(cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
	return err
}

// wantForbidden fails unless err is a 403 whose message contains want.
func wantForbidden(t *testing.T, err error, want string) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Fatalf("want 403 Forbidden, got %v", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("403 for the wrong reason: want %q in %q", want, err.Error())
	}
}

func TestAdminListsNamespaces(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	nss, err := c.AdminClient().CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("admin list namespaces: %v", err)
	}
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
	}
	// kaccess-system comes from the ServiceAccount in deploy/kubernetes/rbac.yaml.
	for _, want := range []string{"default", "kube-system", "kaccess-system"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("namespace %s missing from %v", want, names)
		}
	}
}

func TestKubeconfigReachesCluster(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	kubeconfig, err := c.KubeconfigFor(testenv.AdminUser, c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatalf("parse kubeconfig: %v", err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace default through kubeconfig: %v", err)
	}
}

func TestImpersonatedUserFollowsGrantedRole(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	c.MustNamespace(t, "alice-allowed")
	c.MustNamespace(t, "alice-other")
	c.MustGrantRole(t, "alice-allowed", "configmap-reader", readConfigMaps, testenv.User("alice"))

	alice := gatewayAs(t, c, rest.ImpersonationConfig{UserName: "alice"})
	if err := listConfigMaps(alice, "alice-allowed"); err != nil {
		t.Fatalf("alice list configmaps in her namespace: %v", err)
	}
	wantForbidden(t, listConfigMaps(alice, "alice-other"), `User "alice" cannot list resource "configmaps"`)
}

func TestImpersonatedGroupFollowsGrantedRole(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	c.MustNamespace(t, "devs-allowed")
	c.MustGrantRole(t, "devs-allowed", "configmap-reader", readConfigMaps, testenv.Group("devs"))

	bobInDevs := gatewayAs(t, c, rest.ImpersonationConfig{UserName: "bob", Groups: []string{"devs"}})
	if err := listConfigMaps(bobInDevs, "devs-allowed"); err != nil {
		t.Fatalf("bob in devs list configmaps: %v", err)
	}
	bobAlone := gatewayAs(t, c, rest.ImpersonationConfig{UserName: "bob"})
	wantForbidden(t, listConfigMaps(bobAlone, "devs-allowed"), `User "bob" cannot list resource "configmaps"`)
}

func TestGatewayIdentityIsLeastPrivileged(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	c.MustNamespace(t, "gateway-denied")
	gw := kubernetes.NewForConfigOrDie(c.GatewayConfig())

	wantForbidden(t, listConfigMaps(gw, "gateway-denied"), `User "kaccess-gateway" cannot list resource "configmaps"`)
	_, err := gw.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{})
	wantForbidden(t, err, `User "kaccess-gateway" cannot list resource "secrets"`)

	// The one non-impersonation right it has: asking whether a user may impersonate (kubectl --as).
	review := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               "alice",
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: "impersonate", Resource: "users", Name: "bob"},
	}}
	if _, err := gw.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{}); err != nil {
		t.Fatalf("gateway create SubjectAccessReview: %v", err)
	}
}

// The shipped ClusterRole lists the extras and uids the gateway sets; keys holding a slash
// (kaccess.io/source) must match the rule's resource userextras/kaccess.io/source.
func TestGatewayImpersonatesShippedExtras(t *testing.T) {
	t.Parallel()
	c := testenv.Shared(t)
	c.MustNamespace(t, "extras-allowed")
	c.MustGrantRole(t, "extras-allowed", "configmap-reader", readConfigMaps, testenv.User("alice"))

	tests := []struct {
		name       string
		imp        rest.ImpersonationConfig
		wantDenied string // empty: allowed
	}{
		{name: "source", imp: rest.ImpersonationConfig{UserName: "alice",
			Extra: map[string][]string{"kaccess.io/source": {"test"}}}},
		{name: "all shipped extras and uid", imp: rest.ImpersonationConfig{UserName: "alice", UID: "alice-uid",
			Extra: map[string][]string{
				"kaccess.io/source":          {"test"},
				"kaccess.io/session-id-hash": {"0123456789abcdef"},
				"kaccess.io/original-user":   {"alice@corp.example.com"},
			}}},
		{name: "extra not in the ClusterRole", imp: rest.ImpersonationConfig{UserName: "alice",
			Extra: map[string][]string{"kaccess.io/unlisted": {"x"}}},
			wantDenied: `cannot impersonate resource "userextras/kaccess.io/unlisted"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := listConfigMaps(gatewayAs(t, c, tt.imp), "extras-allowed")
			if tt.wantDenied != "" {
				wantForbidden(t, err, tt.wantDenied)
				return
			}
			if err != nil {
				t.Fatalf("impersonate %+v: %v", tt.imp, err)
			}
		})
	}
}
