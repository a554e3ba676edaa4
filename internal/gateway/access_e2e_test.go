package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

const accessPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: cm-reader
  rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"]}]
- name: secret-reader
  rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"]}]
bindings:
- name: acc-devs
  groups: ["corp:acc-outer"]
  role: cm-reader
  namespaces: ["acc-e2e"]
elevations:
- name: read-secrets
  role: secret-reader
  namespaces: ["acc-e2e"]
  requesters: ["corp:acc-outer"]
  approvers: ["corp:acc-leads"]
  maxDuration: 1m
`

// api calls the gateway's REST API and decodes the JSON answer.
func api(t *testing.T, g *testGateway, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var in bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&in).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(method, g.URL+path, &in)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func adLogin(t *testing.T, g *testGateway, user, password string) string {
	t.Helper()
	code, out := api(t, g, "POST", "/v1/auth:login", "", map[string]string{"source": "corp", "username": user, "password": password})
	if code != 200 {
		t.Fatalf("login %s: %d %v", user, code, out)
	}
	return out["token"].(string)
}

// status of a GET through the gateway as token.
func codeOf(t *testing.T, g *testGateway, path, token string) int {
	t.Helper()
	_, code := requestID(t, g, "GET", path, token)
	return code
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The access policy maps a nested AD group to a role and kubectl gets exactly that; an
// elevation needs a valid approver, works while approved, and ends on time even with the
// controller down (the gateway stops adding the grant's group); the controller, back, removes
// the binding.
func TestAccessPolicyAndElevationThroughGateway(t *testing.T) {
	c, ad := testenv.Shared(t), testenv.SharedAD(t)
	ctx := context.Background()
	for _, step := range []error{
		ad.CreateUser(ctx, "erin", "Passw0rd-erin"), ad.CreateUser(ctx, "frida", "Passw0rd-frida"),
		ad.CreateUser(ctx, "gus", "Passw0rd-gus"),
		ad.CreateGroup(ctx, "acc-inner"), ad.CreateGroup(ctx, "acc-outer"), ad.CreateGroup(ctx, "acc-leads"),
		ad.AddMembers(ctx, "acc-inner", "erin"), ad.AddMembers(ctx, "acc-outer", "acc-inner"),
		ad.AddMembers(ctx, "acc-leads", "frida"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	c.MustNamespace(t, "acc-e2e")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(accessPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	withPolicy := func(cfg *config.Config) {
		adDirectory(t)(cfg)
		cfg.StateDir = state
		cfg.Access.PolicyFile = policyFile
	}
	g1 := startGateway(t, withPolicy)
	erin, frida, gus := adLogin(t, g1, "erin", "Passw0rd-erin"), adLogin(t, g1, "frida", "Passw0rd-frida"), adLogin(t, g1, "gus", "Passw0rd-gus")

	// The policy binding reaches erin through two levels of AD group nesting.
	eventually(t, "erin lists configmaps (policy binding applied)", 30*time.Second, func() bool {
		return codeOf(t, g1, "/api/v1/namespaces/acc-e2e/configmaps", erin) == 200
	})
	if code := codeOf(t, g1, "/api/v1/namespaces/acc-e2e/secrets", erin); code != 403 {
		t.Fatalf("secrets before elevation: %d", code)
	}

	code, out := api(t, g1, "POST", "/v1/accessrequests", erin, map[string]any{"elevation": "read-secrets", "duration": "10s", "reason": "incident 42"})
	if code != 200 {
		t.Fatalf("create request: %d %v", code, out)
	}
	name := out["accessRequest"].(map[string]any)["name"].(string)
	if code, out := api(t, g1, "POST", "/v1/accessrequests/"+name+":approve", erin, map[string]any{}); code != 403 {
		t.Fatalf("self-approval: %d %v", code, out)
	}
	if code, out := api(t, g1, "POST", "/v1/accessrequests/"+name+":approve", gus, map[string]any{}); code != 403 {
		t.Fatalf("approval by a non-approver: %d %v", code, out)
	}
	if code, out := api(t, g1, "POST", "/v1/accessrequests/"+name+":approve", frida, map[string]any{"comment": "ok"}); code != 200 {
		t.Fatalf("approval by an approver: %d %v", code, out)
	}
	eventually(t, "erin reads secrets with the grant", 15*time.Second, func() bool {
		return codeOf(t, g1, "/api/v1/namespaces/acc-e2e/secrets", erin) == 200
	})

	// The controller goes down: the gateway stops, and a stuck leader holds the Lease, so the
	// next gateway serves but never runs the controllers.
	g1.stop()
	leases := c.AdminClient().CoordinationV1().Leases("kaccess-system")
	_ = leases.Delete(ctx, "kaccess-rbacsync", metav1.DeleteOptions{})
	now := metav1.NewMicroTime(time.Now())
	if _, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess-rbacsync"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("stuck-leader"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g2 := startGateway(t, withPolicy)
	if code, out := api(t, g2, "GET", "/v1/accessrequests/"+name, erin, nil); code != 200 || out["accessRequest"].(map[string]any)["state"] != "ACCESS_REQUEST_STATE_APPROVED" {
		t.Fatalf("request on the second gateway: %d %v", code, out)
	}
	eventually(t, "the grant expires and the gateway refuses, with the binding still there", 30*time.Second, func() bool {
		return codeOf(t, g2, "/api/v1/namespaces/acc-e2e/secrets", erin) == 403
	})
	bindings, err := c.AdminClient().RbacV1().RoleBindings("acc-e2e").List(ctx, metav1.ListOptions{LabelSelector: "kaccess.io/grant=" + name})
	if err != nil || len(bindings.Items) == 0 {
		t.Fatalf("the grant binding should outlive the grant while the controller is down: %v %d", err, len(bindings.Items))
	}

	// The controller comes back (the stuck leader is gone): the binding goes.
	if err := leases.Delete(ctx, "kaccess-rbacsync", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	eventually(t, "the controller removes the expired grant's binding", 60*time.Second, func() bool {
		b, err := c.AdminClient().RbacV1().RoleBindings("acc-e2e").List(ctx, metav1.ListOptions{LabelSelector: "kaccess.io/grant=" + name})
		return err == nil && len(b.Items) == 0
	})
	if code := codeOf(t, g2, "/api/v1/namespaces/acc-e2e/configmaps", erin); code != 200 {
		t.Fatalf("the policy binding must stay: %d", code)
	}
}
