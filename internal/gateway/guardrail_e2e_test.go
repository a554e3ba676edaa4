package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/audit/capture"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

const guardrailGatewayPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: gw-deployer
  rules:
  - {apiGroups: ["apps"], resources: ["deployments"], verbs: ["create", "get"]}
  - {apiGroups: [""], resources: ["pods"], verbs: ["create", "get"]}
bindings:
- name: gw-devs
  groups: ["gw:devs"]
  role: gw-deployer
  namespaces: ["gw-guard"]
guardrails:
  images:
  - name: gw-registries
    mode: deny
    namespaces: [gw-guard]
    allowed: ["registry.example.com/"]
  resources:
  - name: gw-limits
    mode: warn
    namespaces: [gw-guard]
  podSecurity:
  - name: gw-baseline
    mode: deny
    level: baseline
    namespaces: [gw-guard]
`

// post sends a JSON body through the gateway and returns the request id, status code and
// Warning headers.
func post(t *testing.T, g *testGateway, path, token string, body any) (string, int, []string) {
	id, code, warnings, _ := postBody(t, g, path, token, body)
	return id, code, warnings
}

func postBody(t *testing.T, g *testGateway, path, token string, body any) (string, int, []string, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, g.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out := readAll(t, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Request-Id"), resp.StatusCode, resp.Header.Values("Warning"), string(out)
}

func guardrailDeployment(name, image string) map[string]any {
	labels := map[string]any{"app": name}
	return map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": image}}}},
		},
	}
}

// A workload a guardrail refuses through the gateway is on the record as the API server's
// denial with the policy's name; one let through with a warning names the policy that
// warned; the guardrail-violation-attempts detection names who kept trying.
func TestGuardrailRefusalsAreRecordedWithThePolicy(t *testing.T) {
	c := testenv.Shared(t)
	ctx := context.Background()
	c.MustNamespace(t, "gw-guard")
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := c.AdminClient().CoreV1().ServiceAccounts("gw-guard").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(guardrailGatewayPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	open, store := embeddedStore(t)
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Access.PolicyFile = policyFile
		cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
	}, WithAuditStore(open))
	t.Cleanup(func() {
		// The gateway's controller made them; they would refuse other tests' workloads in gw-guard only,
		// but leave nothing behind.
		adm := c.AdminClient().AdmissionregistrationV1()
		sel := metav1.ListOptions{LabelSelector: "kaccess.io/guardrail"}
		_ = adm.ValidatingAdmissionPolicyBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
		_ = adm.ValidatingAdmissionPolicies().DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	})
	start := time.Now()
	dana := g.mint(t, "gw-dana", "gw:devs")
	const deployments = "/apis/apps/v1/namespaces/gw-guard/deployments"

	// The controller applies the guardrails, and the API server's admission learns of them.
	var refusedID string
	eventually(t, "the image guardrail refuses through the gateway", 30*time.Second, func() bool {
		id, code, _, body := postBody(t, g, deployments, dana, guardrailDeployment("from-docker", "docker.io/nginx:1.27"))
		refusedID = id
		return code == http.StatusForbidden && strings.Contains(body, "ValidatingAdmissionPolicy 'kaccess-gw-registries'")
	})
	warnedID, code, warnings := post(t, g, deployments, dana, guardrailDeployment("no-limits", "registry.example.com/web:1"))
	if code != http.StatusCreated || !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, "kaccess-gw-limits") }) {
		t.Fatalf("deployment without limits: %d, warnings %q; want 201 with a warning from kaccess-gw-limits", code, warnings)
	}
	hostPod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "host"},
		"spec": map[string]any{"hostNetwork": true, "containers": []any{map[string]any{"name": "app", "image": "registry.example.com/agent:1"}}}}
	podID, code, _ := post(t, g, "/api/v1/namespaces/gw-guard/pods", dana, hostPod)
	if code != http.StatusForbidden {
		t.Fatalf("hostNetwork pod: %d, want 403 from Pod Security", code)
	}
	secondID, _, _ := post(t, g, deployments, dana, guardrailDeployment("from-quay", "quay.io/x/y:1"))

	got := eventsByRequest(t, store, refusedID, warnedID, podID, secondID)
	for _, tc := range []struct {
		name, id, policy, binding, warned string
		decision                          event.Decision
		code                              int
	}{
		{"image refused (and warned: no limits either)", refusedID, "kaccess-gw-registries", "kaccess-gw-registries", "kaccess-gw-limits", event.DecisionDeny, 403},
		{"image refused again", secondID, "kaccess-gw-registries", "kaccess-gw-registries", "kaccess-gw-limits", event.DecisionDeny, 403},
		{"warned", warnedID, "", "", "kaccess-gw-limits", event.DecisionAllow, 201},
		{"pod security", podID, "PodSecurity/baseline:latest", "", "", event.DecisionDeny, 403},
	} {
		evs := got[tc.id]
		if len(evs) != 1 {
			t.Fatalf("%s: %d events", tc.name, len(evs))
		}
		e := evs[0]
		if e.Decision != tc.decision || e.ResponseCode != tc.code || e.User != "gw-dana" || e.RefusalReason != "" ||
			e.Extra[capture.AdmissionPolicyKey] != tc.policy || e.Extra[capture.AdmissionBindingKey] != tc.binding ||
			e.Extra[capture.AdmissionWarnedKey] != tc.warned {
			t.Errorf("%s: stored %s %d user %q reason %q extra %v; want %s %d policy %q binding %q warned %q",
				tc.name, e.Decision, e.ResponseCode, e.User, e.RefusalReason, e.Extra, tc.decision, tc.code, tc.policy, tc.binding, tc.warned)
		}
	}

	var d detect.Detection
	for _, x := range detect.Library() {
		if x.Name == "guardrail-violation-attempts" {
			d = x
		}
	}
	fs, err := detect.RunDetection(ctx, store(), d, start.Add(-time.Minute), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	fs = slices.DeleteFunc(fs, func(f detect.Finding) bool { return f.Subject != "gw-dana" })
	if len(fs) != 1 || fs[0].Count < 3 || fs[0].Severity != detect.High ||
		!strings.Contains(fs[0].Summary, "kaccess-gw-registries") || !strings.Contains(fs[0].Summary, "PodSecurity/baseline:latest") {
		t.Fatalf("guardrail-violation-attempts for gw-dana: %+v", fs)
	}
}
