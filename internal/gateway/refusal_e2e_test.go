package gateway

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

const refusalPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: ref-secret-reader
  rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"]}]
elevations:
- name: ref-read-secrets
  role: ref-secret-reader
  namespaces: ["ref-demo"]
  requesters: ["ref:devs"]
  approvers: ["ref:leads"]
  maxDuration: 30m
`

// The record says what really happened: a user with a grant scoped to ref-demo sends the
// smuggling variants for secrets elsewhere; each is stored as refused with its reason, the
// identity-smuggling detection names her, and the detections that speak of access stay
// silent about them, while they still fire for a read the API server allowed through the
// grant outside its scope (RBAC made broader than approved, by hand, in the test).
func TestRefusalsAreOnTheRecordAsRefusals(t *testing.T) {
	c := testenv.Shared(t)
	ctx := context.Background()
	for _, ns := range []string{"ref-demo", "ref-other", "ref-protected"} {
		c.MustNamespace(t, ns)
	}
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(refusalPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	open, store := embeddedStore(t)
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Access.PolicyFile = policyFile
		cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
		cfg.Audit.AuditorGroups = []string{"ref:security"}
	}, WithAuditStore(open))
	start := time.Now()
	alice, carol, sam := g.mint(t, "ref-alice", "ref:devs"), g.mint(t, "ref-carol", "ref:leads"), g.mint(t, "ref-sam", "ref:security")

	// alice is granted secrets in ref-demo; by a mistake in hand-made RBAC the grant's group can
	// read them in ref-other as well.
	code, out := api(t, g, "POST", "/v1/accessrequests", alice, map[string]any{"elevation": "ref-read-secrets", "duration": "600s", "reason": "INC-16"})
	if code != 200 {
		t.Fatalf("create request: %d %v", code, out)
	}
	name := out["accessRequest"].(map[string]any)["name"].(string)
	if code, out := api(t, g, "POST", "/v1/accessrequests/"+name+":approve", carol, map[string]any{}); code != 200 {
		t.Fatalf("approve: %d %v", code, out)
	}
	eventually(t, "alice reads secrets in ref-demo with the grant", 30*time.Second, func() bool {
		return codeOf(t, g, "/api/v1/namespaces/ref-demo/secrets", alice) == 200
	})
	c.MustGrantRole(t, "ref-other", "ref-grant-leak", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}}},
		testenv.Group(access.GrantGroup(name)))
	var outOfScopeID string
	eventually(t, "alice reads secrets in ref-other through the grant's group", 30*time.Second, func() bool {
		id, code := requestID(t, g, "GET", "/api/v1/namespaces/ref-other/secrets", alice)
		outOfScopeID = id
		return code == 200
	})

	// The smuggling variants, for secrets nobody may read in ref-protected.
	const path = "/api/v1/namespaces/ref-protected/secrets"
	variants := []struct {
		name    string
		header  []string
		code    int
		reason  string
		headers string // names recorded for identity_header refusals
	}{
		{"impersonate admin", []string{"Impersonate-User", "kaccess-admin"}, 403, "impersonation_refused", ""},
		{"impersonate self into system:masters", []string{"Impersonate-User", "ref-alice", "Impersonate-Group", "system:masters"}, 403, "impersonation_refused", ""},
		{"group without user", []string{"Impersonate-Group", "system:masters"}, 400, "identity_header", "Impersonate-Group"},
		{"uid", []string{"Impersonate-Uid", "0"}, 400, "identity_header", "Impersonate-Uid"},
		{"extra", []string{"Impersonate-Extra-Scopes", "admin"}, 400, "identity_header", "Impersonate-Extra-Scopes"},
		{"unknown impersonate header", []string{"Impersonate-Whatever", "x"}, 400, "identity_header", "Impersonate-Whatever"},
		{"x-remote-user", []string{"X-Remote-User", "kaccess-admin"}, 400, "identity_header", "X-Remote-User"},
		{"x-remote-group", []string{"X-Remote-Group", "system:masters"}, 400, "identity_header", "X-Remote-Group"},
		{"x-remote-extra", []string{"X-Remote-Extra-Scopes", "admin"}, 400, "identity_header", "X-Remote-Extra-Scopes"},
		{"second authorization", []string{"Authorization", "Bearer " + c.AdminToken}, 400, "identity_header", "Authorization"},
		{"connection hides an impersonation header", []string{"Connection", "Impersonate-Group", "Impersonate-Group", "system:masters"}, 400, "identity_header", "Connection,Impersonate-Group"},
		{"connection names authorization", []string{"Connection", "Authorization"}, 400, "identity_header", "Connection"},
	}
	ids := map[string]string{}
	for _, v := range variants {
		id, code := requestID(t, g, http.MethodGet, path, alice, v.header...)
		if code != v.code {
			t.Fatalf("%s: status %d, want %d", v.name, code, v.code)
		}
		ids[v.name] = id
	}
	all := []string{outOfScopeID}
	for _, id := range ids {
		all = append(all, id)
	}
	got := eventsByRequest(t, store, all...)
	smuggled := map[string]bool{}
	for _, v := range variants {
		evs := got[ids[v.name]]
		if len(evs) != 1 {
			t.Fatalf("%s: %d events", v.name, len(evs))
		}
		e := evs[0]
		smuggled[e.EventID] = true
		if e.Decision != event.DecisionRefused || e.RefusalReason != v.reason || e.ResponseCode != v.code || e.User != "ref-alice" {
			t.Errorf("%s: stored %s/%q code %d user %q, want refused/%q %d", v.name, e.Decision, e.RefusalReason, e.ResponseCode, e.User, v.reason, v.code)
		}
		if e.Extra["refused_headers"] != v.headers {
			t.Errorf("%s: refused headers %q, want %q", v.name, e.Extra["refused_headers"], v.headers)
		}
	}
	if e := got[outOfScopeID][0]; e.Decision != event.DecisionAllow || e.RefusalReason != "" || !slices.Contains(e.GrantIDs, name) {
		t.Errorf("the read through the grant outside its scope: %+v", e)
	}

	// A security engineer finds them with a filter on the new column.
	filter := `user = "ref-alice" AND decision = "refused" AND refusal_reason = "identity_header"`
	code, out = api(t, g, "GET", "/v1/auditevents?page_size=100&filter="+url.QueryEscape(filter), sam, nil)
	if evs, _ := out["events"].([]any); code != 200 || len(evs) != 10 {
		t.Fatalf("search %s: %d, %d events, want 10: %v", filter, code, len(evs), out)
	}

	// Detections over the window: the smuggler is named, with header names but no values.
	from, to := start.Add(-time.Minute), time.Now().Add(time.Minute)
	findings := func(name string) []detect.Finding {
		t.Helper()
		for _, d := range detect.Library() {
			if d.Name == name {
				fs, err := detect.RunDetection(ctx, store(), d, from, to)
				if err != nil {
					t.Fatal(err)
				}
				return fs
			}
		}
		t.Fatalf("no detection %s", name)
		return nil
	}
	about := func(fs []detect.Finding, subject string) []detect.Finding {
		return slices.DeleteFunc(slices.Clone(fs), func(f detect.Finding) bool { return f.Subject != subject })
	}
	smuggling := about(findings("identity-smuggling"), "ref-alice")
	if len(smuggling) != 1 || smuggling[0].Count != 10 || smuggling[0].Severity != detect.High {
		t.Fatalf("identity-smuggling for ref-alice: %+v", smuggling)
	}
	for _, want := range []string{"Impersonate-Group", "X-Remote-User", "Authorization", "Connection", "127.0.0.1"} {
		if !strings.Contains(smuggling[0].Summary, want) {
			t.Errorf("identity-smuggling summary lacks %s: %s", want, smuggling[0].Summary)
		}
	}
	for _, value := range []string{"system:masters", "kaccess-admin", c.AdminToken} {
		if strings.Contains(smuggling[0].Summary, value) {
			t.Errorf("identity-smuggling summary shows a header value %q: %s", value, smuggling[0].Summary)
		}
	}
	for _, det := range []string{"grant-out-of-scope", "secret-first-access"} {
		fs := about(findings(det), "ref-alice")
		var hitOther bool
		for _, f := range fs {
			if strings.Contains(f.Summary, "ref-protected") || slices.ContainsFunc(f.EventIDs, func(id string) bool { return smuggled[id] }) {
				t.Errorf("%s reports refused requests as access: %s", det, f.Summary)
			}
			hitOther = hitOther || (strings.Contains(f.Summary, "ref-other") && slices.Contains(f.EventIDs, got[outOfScopeID][0].EventID))
		}
		if !hitOther {
			t.Errorf("%s does not report the read the API server allowed in ref-other: %+v", det, fs)
		}
	}
}
