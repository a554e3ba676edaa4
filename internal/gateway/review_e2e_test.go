package gateway

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

const reviewPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: rev-app
  rules:
  - {apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "create", "delete"]}
  - {apiGroups: [""], resources: ["pods", "pods/log"], verbs: ["get", "list"]}
  - {apiGroups: [""], resources: ["configmaps"], verbs: ["*"]}
- name: rev-svc
  rules:
  - {apiGroups: [""], resources: ["services"], verbs: ["get", "list"]}
- name: rev-secret-reader
  rules:
  - {apiGroups: [""], resources: ["secrets"], verbs: ["get", "list", "delete"]}
bindings:
- name: rev-devs
  groups: ["corp:rev-devs"]
  role: rev-app
  namespaces: ["rev-a"]
- name: rev-idle
  groups: ["corp:rev-nobody"]
  role: rev-svc
  namespaces: ["rev-a"]
elevations:
- name: rev-secrets
  role: rev-secret-reader
  namespaces: ["rev-a"]
  requesters: ["corp:rev-devs"]
  approvers: ["audit:security"]
  maxDuration: 1h
`

// The review as -o json prints it (protojson's field names).
type reviewJSON struct {
	Bindings []struct {
		Name      string      `json:"name"`
		Users     []string    `json:"users"`
		Requests  json.Number `json:"requests"`
		Used      []rightJSON `json:"used"`
		Unused    []rightJSON `json:"unused"`
		Remove    bool        `json:"remove"`
		Wildcards []struct {
			Rule  int      `json:"rule"`
			Field string   `json:"field"`
			Seen  []string `json:"seen"`
		} `json:"wildcards"`
	} `json:"bindings"`
	Elevations []struct {
		Name     string      `json:"name"`
		Grants   []string    `json:"grants"`
		Users    []string    `json:"users"`
		Requests json.Number `json:"requests"`
		Used     []rightJSON `json:"used"`
		Unused   []rightJSON `json:"unused"`
	} `json:"elevations"`
	ProposedPolicy string `json:"proposedPolicy"`
	PolicyDiff     string `json:"policyDiff"`
}

type rightJSON struct {
	APIGroup string `json:"apiGroup"`
	Resource string `json:"resource"`
	Verb     string `json:"verb"`
}

func (r rightJSON) String() string { return r.Verb + " " + r.APIGroup + "/" + r.Resource }

func rightSet(rs []rightJSON) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}

// A person uses some of what the policy grants through the gateway (kubectl, kaccess
// credential, a real kube-apiserver, the embedded audit store); an auditor's review proposes
// removing exactly the rest, and the review is on the record.
func TestAccessReviewProposesExactlyTheUnusedRights(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "rev-a")
	lib, helper := testenv.ChDB(t)
	ctx := context.Background()
	store, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(reviewPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	accounts := map[string]string{"alice": "alice-pw", "sam": "sam-pw"}
	groups := map[string][]string{"alice": {"corp:rev-devs"}, "sam": {"audit:security"}}
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Access.PolicyFile = policyFile
		cfg.Audit.AuditorGroups = []string{"audit:security"}
	}, WithAuditStore(func(context.Context) (ship.Sink, error) { return keptOpen{store}, nil }),
		WithPasswordSource("corp", passwords(accounts, groups)))

	alice, sam := newCLIEnv(t, g), newCLIEnv(t, g)
	for _, who := range []struct {
		e    *cliEnv
		user string
	}{{alice, "alice"}, {sam, "sam"}} {
		if _, errOut, err := who.e.run(accounts[who.user]+"\n", "login", "--server", g.URL, "--ca-file", who.e.caFile, "--username", who.user, "--password-stdin"); err != nil {
			t.Fatalf("login %s: %v %s", who.user, err, errOut)
		}
	}
	if _, errOut, err := alice.run("", "kubeconfig", "--server", g.URL, "--kubeconfig", alice.kube, "--namespace", "rev-a"); err != nil {
		t.Fatalf("kubeconfig: %v %s", err, errOut)
	}
	eventually(t, "alice lists pods (policy binding applied)", 30*time.Second, func() bool {
		_, _, err := alice.kubectl("get", "pods", "-n", "rev-a")
		return err == nil
	})
	// What alice uses: list pods, get pods/log, get deployments, create and get configmaps.
	for _, args := range [][]string{
		{"get", "--raw", "/api/v1/namespaces/rev-a/pods/nope/log"}, // 404 after authorization: allowed
		{"get", "deployment", "web", "-n", "rev-a"},                // 404 too
		{"create", "configmap", "rev-cfg", "-n", "rev-a", "--from-literal=a=b"},
		{"get", "configmap", "rev-cfg", "-n", "rev-a", "-o", "name"},
	} {
		_, errOut, err := alice.kubectl(args...)
		if err != nil && !strings.Contains(errOut, "NotFound") && !strings.Contains(errOut, "not found") {
			t.Fatalf("kubectl %v: %v %s", args, err, errOut)
		}
	}
	// Refused requests use no right.
	for _, args := range [][]string{{"get", "secrets", "-n", "rev-a"}, {"get", "pods", "-n", "default"}} {
		if _, errOut, err := alice.kubectl(args...); err == nil || !strings.Contains(errOut, "forbidden") {
			t.Fatalf("kubectl %v: %v %s, want forbidden", args, err, errOut)
		}
	}
	// alice asks for rev-secrets, sam approves, and alice lists secrets under the grant.
	aliceTok, samTok := g.mint(t, "alice", "corp:rev-devs"), g.mint(t, "sam", "audit:security")
	code, body := api(t, g, "POST", "/v1/accessrequests", aliceTok, map[string]any{"elevation": "rev-secrets", "duration": "600s", "reason": "INC-7"})
	if code != 200 {
		t.Fatalf("access request: %d %v", code, body)
	}
	grant := body["accessRequest"].(map[string]any)["name"].(string)
	if code, body := api(t, g, "POST", "/v1/accessrequests/"+grant+":approve", samTok, map[string]any{"comment": "ok"}); code != 200 {
		t.Fatalf("approve: %d %v", code, body)
	}
	eventually(t, "alice lists secrets under the grant", 30*time.Second, func() bool {
		_, _, err := alice.kubectl("get", "secrets", "-n", "rev-a")
		return err == nil
	})
	// The review reads the store: wait until alice's last request is in it.
	eventually(t, "alice's requests in the audit store", 30*time.Second, func() bool {
		all, err := allEvents(store)
		return err == nil && slices.ContainsFunc(all, func(e *event.Event) bool {
			return e.User == "alice" && e.Resource == "secrets" && e.Decision == event.DecisionAllow
		})
	})

	// alice is no auditor: refused, and the refusal is on the record.
	if _, errOut, err := alice.run("", "access", "review", "--server", g.URL); err == nil || !strings.Contains(errOut, "auditor groups") {
		t.Fatalf("alice's review: %v %s, want a refusal", err, errOut)
	}

	// And over REST, like the other calls: refused for alice, answered for an auditor.
	if code, body := api(t, g, "GET", "/v1/access:review", aliceTok, nil); code != 403 {
		t.Fatalf("REST review as alice: %d %v", code, body)
	}
	if code, body := api(t, g, "GET", "/v1/access:review", samTok, nil); code != 200 || len(asList(body["bindings"])) != 2 {
		t.Fatalf("REST review as an auditor: %d %v", code, body)
	}

	out, errOut, err := sam.run("", "access", "review", "--server", g.URL, "--since", "1d", "-o", "json")
	if err != nil {
		t.Fatalf("review: %v %s", err, errOut)
	}
	var rev reviewJSON
	if err := json.Unmarshal([]byte(out), &rev); err != nil {
		t.Fatalf("review output: %v\n%s", err, out)
	}
	if len(rev.Bindings) != 2 {
		t.Fatalf("bindings %+v", rev.Bindings)
	}
	devs, idle := rev.Bindings[0], rev.Bindings[1]
	wantUsed := []string{"create /configmaps", "get /configmaps", "get /pods/log", "get apps/deployments", "list /pods"}
	if got := rightSet(devs.Used); !slices.Equal(got, wantUsed) {
		t.Errorf("rev-devs used %v, want %v", got, wantUsed)
	}
	wantUnused := []string{"create apps/deployments", "delete apps/deployments", "get /pods", "list /pods/log", "list apps/deployments"}
	if got := rightSet(devs.Unused); !slices.Equal(got, wantUnused) {
		t.Errorf("rev-devs unused %v, want %v", got, wantUnused)
	}
	if len(devs.Wildcards) != 1 || devs.Wildcards[0].Field != "verbs" || !slices.Equal(devs.Wildcards[0].Seen, []string{"create", "get"}) {
		t.Errorf("rev-devs wildcards %+v, want verbs seen as create, get", devs.Wildcards)
	}
	if devs.Remove || !slices.Equal(devs.Users, []string{"alice"}) {
		t.Errorf("rev-devs remove %v users %v", devs.Remove, devs.Users)
	}
	if !idle.Remove || (idle.Requests != "" && idle.Requests != "0") { // protojson leaves out a zero
		t.Errorf("rev-idle: remove %v requests %s, want removal of a binding nobody used", idle.Remove, idle.Requests)
	}

	// The elevation: what its grant was used for; its role stays whole.
	if len(rev.Elevations) != 1 {
		t.Fatalf("elevations %+v", rev.Elevations)
	}
	el := rev.Elevations[0]
	if !slices.Equal(el.Grants, []string{grant}) || !slices.Equal(el.Users, []string{"alice"}) || el.Requests == "" {
		t.Errorf("rev-secrets: %+v", el)
	}
	if got := rightSet(el.Used); !slices.Equal(got, []string{"list /secrets"}) {
		t.Errorf("rev-secrets used %v, want list /secrets", got)
	}
	if got := rightSet(el.Unused); !slices.Equal(got, []string{"delete /secrets", "get /secrets"}) {
		t.Errorf("rev-secrets unused %v", got)
	}

	// The proposal is a valid policy with exactly the used rights.
	proposed, err := policy.Load([]byte(rev.ProposedPolicy))
	if err != nil {
		t.Fatalf("proposed policy: %v\n%s", err, rev.ProposedPolicy)
	}
	if len(proposed.Bindings) != 1 || proposed.Bindings[0].Name != "rev-devs" || len(proposed.Roles) != 2 ||
		proposed.Roles[0].Name != "rev-app" || proposed.Roles[1].Name != "rev-secret-reader" || len(proposed.Roles[1].Rules[0].Verbs) != 3 {
		t.Fatalf("proposed %+v", proposed)
	}
	var got []string
	for _, r := range proposed.Roles[0].Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, rightJSON{APIGroup: g, Resource: res, Verb: v}.String())
				}
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, wantUsed) {
		t.Errorf("proposed role grants %v, want exactly %v", got, wantUsed)
	}
	// The table a person reads.
	table, errOut, err := sam.run("", "access", "review", "--server", g.URL, "--since", "2h")
	if err != nil {
		t.Fatalf("review table: %v %s", err, errOut)
	}
	t.Logf("kaccess access review:\n%s", table)
	for _, want := range []string{"rev-idle", "remove the binding: no member used it", "unused: list apps/deployments",
		`wildcard: rules[2].verbs "*" was used as: create, get`, "--- policy (current)", "-  name: rev-idle",
		"elevation rev-secrets (role rev-secret-reader), grants " + grant + ", used by alice:", "role rev-secret-reader: granted by elevation rev-secrets: kept whole"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	// The three reviews and alice's two refusals are audit events.
	eventually(t, "the reviews on the audit record", 30*time.Second, func() bool {
		all, err := allEvents(store)
		if err != nil {
			return false
		}
		var done, refused int
		for _, e := range all {
			if e.Kind != event.KindAuditQuery || e.Extra["rpc"] != "ReviewAccess" {
				continue
			}
			switch {
			case e.User == "sam" && e.ResponseCode == 200 && e.Extra["scope"] == "all":
				done++
			case e.User == "alice" && e.ResponseCode == 403:
				refused++
			}
		}
		return done == 3 && refused == 2
	})
}
