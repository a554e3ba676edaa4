package gateway

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// storedEvents waits until the store holds events matching keep and returns them once their
// number has stayed the same for a flush or two (the shipper sends in batches).
func storedEvents(t *testing.T, store func() *chdb.Store, want int, keep func(*event.Event) bool) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []*event.Event
		if s := store(); s != nil {
			all, err := allEvents(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range all {
				if keep(e) {
					got = append(got, e)
				}
			}
		}
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d matching events in the audit store after 30s, want %d", len(got), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A create names its object only in the API server's answer: the record has the name (the
// generated one for generateName) at the default Metadata level of configmaps, whether the
// answer came as JSON (kubectl) or protobuf (client-go), and keeps no body.
func TestCreateRecordsTheNameOfTheObjectCreated(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "fid-create")
	c.MustGrantRole(t, "fid-create", "fid-cm-writer", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create"},
	}}, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "fid:devs"})
	open, store := embeddedStore(t)
	g := startGateway(t, func(c *config.Config) {
		c.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
	}, WithAuditStore(open))
	token := g.mint(t, "fid-creator", "fid:devs")

	mustKubectl(t, g.kubeconfig(t, "fid-creator", token), "create", "configmap", "by-kubectl", "-n", "fid-create", "--from-literal=k=v")

	// client-go, with protobuf (its default for built-in kinds) and with JSON; the request ids
	// and answer types of its creates are kept to check what the API server answered.
	var mu sync.Mutex
	answerType := map[string]string{}
	client := func(protobuf bool) kubernetes.Interface {
		cfg := g.restConfig(token)
		cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
		if protobuf {
			cfg.ContentType = "application/vnd.kubernetes.protobuf"
			cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		}
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				if err == nil && r.Method == "POST" {
					mu.Lock()
					answerType[resp.Header.Get("X-Request-Id")] = resp.Header.Get("Content-Type")
					mu.Unlock()
				}
				return resp, err
			})
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ctx := context.Background()
	cms := client(true).CoreV1().ConfigMaps("fid-create")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "by-client-go"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	generated, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "generated-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jsonGenerated, err := client(false).CoreV1().ConfigMaps("fid-create").Create(ctx,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "generated-json-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	protobufAnswers := 0
	for _, ct := range answerType {
		if strings.Contains(ct, "protobuf") {
			protobufAnswers++
		}
	}
	if protobufAnswers != 2 {
		t.Fatalf("answer types of client-go's creates: %v, want two protobuf", answerType)
	}

	evs := storedEvents(t, store, 4, func(e *event.Event) bool {
		return e.Kind == event.KindRequest && e.User == "fid-creator" && e.Verb == "create"
	})
	names := map[string]*event.Event{}
	for _, e := range evs {
		names[e.Name] = e
		if e.Namespace != "fid-create" || e.Resource != "configmaps" || e.ResponseCode != 201 ||
			e.Decision != event.DecisionAllow || e.Level != event.LevelMetadata || e.ResponseBody != nil || e.RequestBody != nil {
			t.Errorf("create event: %+v", e)
		}
	}
	for _, want := range []string{"by-kubectl", "by-client-go", generated.Name, jsonGenerated.Name} {
		if names[want] == nil {
			t.Errorf("no create event named %q; names recorded: %v", want, keys(names))
		}
	}
	if e := names[generated.Name]; e != nil && !strings.Contains(answerType[e.RequestID], "protobuf") {
		t.Errorf("the generateName create was answered as %q, want protobuf", answerType[e.RequestID])
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

const fidelityPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: fid-secret-reader
  rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get"]}]
elevations:
- name: fid-read-secrets
  role: fid-secret-reader
  namespaces: ["fid-state"]
  requesters: ["fid:devs"]
  approvers: ["fid:leads"]
  maxDuration: 30m
`

// State events say what the API answered the person who made the change, with a decision to
// match: a login and a logout (200), a wrong password (401, refused), an access request made
// (200), a self-approval refused (403), an approval granting access (200, with the grant), a
// denial (200: the denial was made), a revocation ending the grant, and the RBAC the policy
// made (201 from the API server).
func TestStateEventsRecordWhatTheAPIAnswered(t *testing.T) {
	c, ad := testenv.Shared(t), testenv.SharedAD(t)
	ctx := context.Background()
	if err := ad.CreateUser(ctx, "fid-ann", "Passw0rd-ann"); err != nil {
		t.Fatal(err)
	}
	c.MustNamespace(t, "fid-state")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(fidelityPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	open, store := embeddedStore(t)
	g := startGateway(t, func(cfg *config.Config) {
		adDirectory(t)(cfg)
		cfg.Access.PolicyFile = policyFile
		cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
	}, WithAuditStore(open))

	ann := adLogin(t, g, "fid-ann", "Passw0rd-ann")
	if code, out := api(t, g, "POST", "/v1/auth:login", "", map[string]string{"source": "corp", "username": "fid-ann", "password": "wrong"}); code != 401 {
		t.Fatalf("wrong password: %d %v", code, out)
	}
	if code, out := api(t, g, "POST", "/v1/auth:logout", ann, map[string]any{}); code != 200 {
		t.Fatalf("logout: %d %v", code, out)
	}

	dev, lead := g.mint(t, "fid-dev", "fid:devs"), g.mint(t, "fid-lead", "fid:leads")
	create := func() string {
		t.Helper()
		code, out := api(t, g, "POST", "/v1/accessrequests", dev, map[string]any{"elevation": "fid-read-secrets", "duration": "600s", "reason": "INC-7"})
		if code != 200 {
			t.Fatalf("create request: %d %v", code, out)
		}
		return out["accessRequest"].(map[string]any)["name"].(string)
	}
	granted, denied := create(), create()
	for _, step := range []struct {
		name, path, token string
		want              int
	}{
		{"self-approval", granted + ":approve", dev, 403},
		{"approval", granted + ":approve", lead, 200},
		{"denial", denied + ":deny", lead, 200},
		{"revocation", granted + ":revoke", dev, 200},
	} {
		if code, out := api(t, g, "POST", "/v1/accessrequests/"+step.path, step.token, map[string]any{}); code != step.want {
			t.Fatalf("%s: %d %v, want %d", step.name, code, out, step.want)
		}
	}

	type row struct {
		kind, user, action string
		code               int
		decision           event.Decision
		reason             string
	}
	want := []row{
		{"login", "fid-ann", "", 200, event.DecisionAllow, ""},
		{"login_failed", "fid-ann", "", 401, event.DecisionRefused, "invalid_credentials"},
		{"logout", "fid-ann", "", 200, event.DecisionAllow, ""},
		{"access_request", "fid-dev", "created", 200, event.DecisionAllow, ""},
		{"access_request", "fid-dev", "created", 200, event.DecisionAllow, ""},
		{"access_request", "fid-dev", "approve", 403, event.DecisionRefused, "self_approval"},
		{"access_request", "fid-lead", "approved", 200, event.DecisionAllow, ""},
		{"grant", "fid-lead", "approved", 200, event.DecisionAllow, ""},
		{"access_request", "fid-lead", "denied", 200, event.DecisionAllow, ""},
		{"access_request", "fid-dev", "revoked", 200, event.DecisionAllow, ""},
		{"grant_revoked", "fid-dev", "revoked", 200, event.DecisionAllow, ""},
	}
	isState := func(e *event.Event) bool {
		return e.Kind != event.KindRequest && e.Kind != event.KindRBACChange && e.Kind != event.KindAuditQuery &&
			(strings.HasPrefix(e.User, "fid-") || e.Extra["request"] == granted || e.Extra["request"] == denied)
	}
	evs := storedEvents(t, store, len(want), isState)
	slices.SortFunc(evs, func(a, b *event.Event) int { return strings.Compare(a.EventID, b.EventID) })
	var got []row
	for _, e := range evs {
		got = append(got, row{string(e.Kind), e.User, e.Extra["action"], e.ResponseCode, e.Decision, e.RefusalReason})
	}
	if !slices.Equal(got, want) {
		t.Errorf("state events:\n%v\nwant\n%v", got, want)
	}

	// The RBAC the policy asked for, as the API server answered the leader's writes.
	rbac := storedEvents(t, store, 1, func(e *event.Event) bool {
		return e.Kind == event.KindRBACChange && e.Name == "kaccess:fid-secret-reader"
	})
	if e := rbac[0]; e.Verb != "create" || e.Resource != "clusterroles" || e.ResponseCode != 201 || e.Decision != event.DecisionAllow {
		t.Errorf("rbac_change: %+v", e)
	}
}
