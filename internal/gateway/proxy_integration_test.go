package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kaccess/kaccess/internal/testenv"
)

var (
	readConfigMaps  = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}
	writeConfigMaps = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create", "delete"}}
)

// kubectl through the gateway with a session token gets exactly the user's and groups' RBAC,
// and the API server's own 403 text otherwise.
func TestKubectlGetsExactlyTheUsersRBAC(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "rbac-allowed")
	c.MustNamespace(t, "rbac-denied")
	c.MustGrantRole(t, "rbac-allowed", "alice-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("alice"))
	c.MustGrantRole(t, "rbac-allowed", "devs-write", []rbacv1.PolicyRule{writeConfigMaps}, testenv.Group("test:devs"))
	g := startGateway(t, nil)
	kc := g.kubeconfig(t, "alice", g.mint(t, "alice", "test:devs"))

	// Her own Role lets her list; her group's Role lets her create.
	mustKubectl(t, kc, "get", "configmaps", "-n", "rbac-allowed")
	mustKubectl(t, kc, "create", "configmap", "from-alice", "-n", "rbac-allowed", "--from-literal=k=v")
	if out := mustKubectl(t, kc, "get", "configmap", "from-alice", "-n", "rbac-allowed", "-o", "jsonpath={.data.k}"); out != "v" {
		t.Fatalf("read back %q", out)
	}
	// Nothing more: no write through the read Role, nothing in another namespace, no secrets.
	for _, args := range [][]string{
		{"get", "configmaps", "-n", "rbac-denied"},
		{"get", "secrets", "-n", "rbac-allowed"},
		{"create", "configmap", "x", "-n", "rbac-denied"},
	} {
		_, errOut, err := kubectl(t, kc, args...)
		if err == nil {
			t.Fatalf("kubectl %v was allowed", args)
		}
		if !strings.Contains(errOut, `is forbidden: User "alice" cannot`) {
			t.Errorf("kubectl %v: want the API server's forbidden text, got %q", args, errOut)
		}
	}

	// The API server sees alice with her groups, her uid and where the identity came from.
	var review struct {
		Status struct {
			UserInfo struct {
				Username string              `json:"username"`
				UID      string              `json:"uid"`
				Groups   []string            `json:"groups"`
				Extra    map[string][]string `json:"extra"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(mustKubectl(t, kc, "auth", "whoami", "-o", "json")), &review); err != nil {
		t.Fatal(err)
	}
	ui := review.Status.UserInfo
	if ui.Username != "alice" || ui.UID != "uid-alice" || !contains(ui.Groups, "test:devs") || ui.Extra["kaccess.io/source"][0] != "test" {
		t.Fatalf("API server sees %+v", ui)
	}
	if got := ui.Extra["kaccess.io/session-id-hash"]; len(got) != 1 || len(got[0]) != 16 {
		t.Errorf("session id not forwarded: %+v", ui.Extra)
	}
}

// Every attempt to claim another identity through headers is refused and changes nothing.
func TestHeaderSmugglingIsRefused(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "smuggle")
	c.MustGrantRole(t, "smuggle", "mallory-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("mallory"))
	g := startGateway(t, nil)
	token := g.mint(t, "mallory")
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"impersonate admin", http.Header{"Impersonate-User": {"kaccess-admin"}}, http.StatusForbidden},
		{"impersonate self into system:masters", http.Header{"Impersonate-User": {"mallory"}, "Impersonate-Group": {"system:masters"}}, http.StatusForbidden},
		{"group without user", http.Header{"Impersonate-Group": {"system:masters"}}, http.StatusBadRequest},
		{"uid", http.Header{"Impersonate-Uid": {"0"}}, http.StatusBadRequest},
		{"extra", http.Header{"Impersonate-Extra-Scopes": {"admin"}}, http.StatusBadRequest},
		{"x-remote-user", http.Header{"X-Remote-User": {"kaccess-admin"}}, http.StatusBadRequest},
		{"x-remote-group", http.Header{"X-Remote-Group": {"system:masters"}}, http.StatusBadRequest},
		{"second authorization", http.Header{"Authorization": {"Bearer " + c.AdminToken}}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"smuggled"}}`
			req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/namespaces/smuggle/configmaps", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Add("Authorization", "Bearer "+token)
			for k, vs := range tt.header {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			resp, err := g.httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			msg := readAll(t, resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, msg)
			}
			var st metav1.Status
			if err := json.Unmarshal([]byte(msg), &st); err != nil || st.Message == "" {
				t.Fatalf("want a Status with a message, got %q", msg)
			}
		})
	}
	// Nothing was created by any of them.
	_, err := c.AdminClient().CoreV1().ConfigMaps("smuggle").Get(context.Background(), "smuggled", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("a smuggled request changed the cluster: %v", err)
	}
	// The API server's own tokens are not gateway credentials.
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/namespaces", nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin token of the API server: status %d, want 401", resp.StatusCode)
	}
}

// kubectl --as works only when the user's own RBAC allows that impersonation, and the real
// user stays visible to the API server.
func TestKubectlAsFollowsImpersonationRBAC(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "as-target")
	c.MustGrantRole(t, "as-target", "bob-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("bob"))
	c.MustGrantRole(t, "", "carol-may-be-bob", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"bob"},
	}}, testenv.User("carol"))
	g := startGateway(t, nil)
	kc := g.kubeconfig(t, "carol", g.mint(t, "carol"))

	if _, errOut, err := kubectl(t, kc, "get", "configmaps", "-n", "as-target"); err == nil || !strings.Contains(errOut, "forbidden") {
		t.Fatalf("carol herself must not read: %v %s", err, errOut)
	}
	mustKubectl(t, kc, "get", "configmaps", "-n", "as-target", "--as", "bob")
	for _, as := range [][]string{{"--as", "dave"}, {"--as", "bob", "--as-group", "system:masters"}} {
		if _, errOut, err := kubectl(t, kc, append([]string{"get", "configmaps", "-n", "as-target"}, as...)...); err == nil || !strings.Contains(errOut, "Forbidden") {
			t.Fatalf("kubectl %v: want Forbidden, got %v %q", as, err, errOut)
		}
	}
	// The refusal reads as the API server's own would (kubectl's discovery hides the message,
	// as it does for the API server's refusals; client-go shows it).
	for _, tc := range []struct {
		imp  rest.ImpersonationConfig
		want string
	}{
		{rest.ImpersonationConfig{UserName: "dave"}, `users "dave" is forbidden: User "carol" cannot impersonate resource "users" in API group "" at the cluster scope`},
		{rest.ImpersonationConfig{UserName: "bob", Groups: []string{"system:masters"}}, `groups "system:masters" is forbidden: User "carol" cannot impersonate resource "groups"`},
		{rest.ImpersonationConfig{UserName: "system:serviceaccount:kube-system:default"}, `serviceaccounts "default" is forbidden: User "carol" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "kube-system"`},
	} {
		rc := g.restConfig(g.mint(t, "carol"))
		rc.Impersonate = tc.imp
		cs := kubernetes.NewForConfigOrDie(rc)
		_, err := cs.CoreV1().ConfigMaps("as-target").List(context.Background(), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("as %+v: got %v, want %q", tc.imp, err, tc.want)
		}
	}
	out := mustKubectl(t, kc, "auth", "whoami", "--as", "bob", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.extra.kaccess\\.io/original-user}")
	if out != "bob [\"carol\"]" && out != "bob carol" {
		t.Fatalf("whoami --as bob = %q, want bob with original user carol", out)
	}
}

// A watch delivers each event as it happens, and the stream stays open.
func TestWatchDeliversEventsAtOnce(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "watched")
	c.MustGrantRole(t, "watched", "erin-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("erin"))
	g := startGateway(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := g.client(t, g.mint(t, "erin")).CoreV1().ConfigMaps("watched").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	admin := c.AdminClient().CoreV1().ConfigMaps("watched")
	for _, name := range []string{"first", "second"} {
		// One change, then nothing else until its event arrives.
		if _, err := admin.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev, open := <-w.ResultChan():
			if !open {
				t.Fatal("watch closed")
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if ev.Type != watch.Added || !ok || cm.Name != name {
				t.Fatalf("event %s %#v, want ADDED %s", ev.Type, ev.Object, name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event for %s not delivered: the gateway buffers the stream", name)
		}
	}
}

// Expired, revoked, malformed and wrongly signed tokens get 401 with a reason.
func TestBadTokensGet401(t *testing.T) {
	g := startGateway(t, nil)
	other := startGateway(t, nil) // same issuer, its own keys
	revoked := g.mint(t, "frank")
	probe := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/namespaces/default/configmaps", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := g.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body)
	}
	if code, body := probe(revoked); code != http.StatusForbidden {
		t.Fatalf("valid token: %d %s (want the API server's 403: frank has no RBAC)", code, body)
	}
	claims, err := g.Sessions().Verify(context.Background(), revoked)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Sessions().Revoke(context.Background(), claims.SessionID, claims.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	expired := expiredToken(t, g)
	parts := strings.Split(g.mint(t, "frank"), ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]
	for name, tc := range map[string]struct{ token, want string }{
		"revoked":        {revoked, "session was ended"},
		"expired":        {expired, "session has expired"},
		"malformed":      {"not-a-token", "not one the gateway issued"},
		"jws garbage":    {"eyJhbGciOiJFZERTQSJ9.e30.AAAA", "not one the gateway issued"},
		"wrongly signed": {other.mint(t, "frank"), "signature is not valid"},
		"tampered":       {tampered, ""},
	} {
		code, body := probe(tc.token)
		if code != http.StatusUnauthorized || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want 401 with %q", name, code, body, tc.want)
		}
		if strings.Contains(g.logs.String(), tc.token) {
			t.Errorf("%s: the token appears in the log", name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
