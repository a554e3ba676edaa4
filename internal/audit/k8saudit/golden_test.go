package k8saudit_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/gateway"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

// TestMain lets testenv remove the chDB helper it builds for the golden test.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// goldenPolicy is the audit policy of both the API server and the gateway.
const goldenPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: RequestResponse
  resources: [{group: "", resources: ["configmaps"]}]
- level: Metadata
`

// microTime is how kube-apiserver writes times (metav1.MicroTime).
var microTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// TestExportReadsLikeTheAPIServersOwnLog sends requests through a real gateway to a real
// kube-apiserver that writes its own audit log (log backend, JSON), exports the gateway's
// record in the Kubernetes format, and compares each exported line with the API server's line
// of the same request (the gateway sends its request id as Audit-ID, so both have the same
// auditID) at the JSON paths Falco's k8saudit plugin reads. Those paths, from the plugin's
// field extraction (falcosecurity/plugins, plugins/k8saudit/pkg/k8saudit/extract.go and
// source.go): kind "Event" and a stageTimestamp in RFC 3339 to take a line at all; ka.auditid
// auditID, ka.stage stage, ka.verb verb, ka.uri requestURI, ka.user.name user.username,
// ka.user.groups user.groups, ka.impuser.name impersonatedUser.username, ka.target.* objectRef
// .resource/.namespace/.name/.subresource, ka.response.code responseStatus.code,
// ka.response.reason responseStatus.reason, ka.sourceips sourceIPs, ka.useragent userAgent,
// ka.auth.decision and ka.auth.reason annotations["authorization.k8s.io/decision"] and
// ["authorization.k8s.io/reason"], ka.req.* requestObject (e.g. ka.req.configmap.obj
// requestObject.data), ka.resp.name responseObject.metadata.name.
func TestExportReadsLikeTheAPIServersOwnLog(t *testing.T) {
	dir := t.TempDir()
	policyFile, logFile := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policyFile, []byte(goldenPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testenv.StartCluster(ctx, testenv.ClusterConfig{APIServerArgs: []string{
		"--audit-policy-file=" + policyFile, "--audit-log-path=" + logFile,
		"--audit-log-format=json", "--audit-log-mode=blocking",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	c.MustNamespace(t, "golden")
	c.MustGrantRole(t, "golden", "cm-editor", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "delete"},
	}}, testenv.Group("golden:devs"))

	g := startGateway(t, c, policyFile)
	alice, sam := g.mint(t, "alice", "golden:devs"), g.mint(t, "sam", "golden:security")

	const cms = "/api/v1/namespaces/golden/configmaps"
	body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm1"},"data":{"k":"v"}}`
	reqs := []struct {
		name, method, path, token, body string
		code                            int
		stages                          []string // what the API server logs; none for a refusal
	}{
		{"create", "POST", cms, alice, body, 201, []string{"ResponseComplete"}},
		{"get", "GET", cms + "/cm1", alice, "", 200, []string{"ResponseComplete"}},
		{"list", "GET", cms + "?limit=10", alice, "", 200, []string{"ResponseComplete"}},
		{"watch", "GET", cms + "?watch=true&timeoutSeconds=1", alice, "", 200, []string{"ResponseStarted", "ResponseComplete"}},
		{"not found", "GET", cms + "/nope", alice, "", 404, []string{"ResponseComplete"}},
		{"forbidden", "GET", "/api/v1/namespaces/golden/secrets", alice, "", 403, []string{"ResponseComplete"}},
		{"delete", "DELETE", cms + "/cm1", alice, "", 200, []string{"ResponseComplete"}},
		{"refused", "GET", cms, "not-a-session", "", 401, nil},
	}
	ids := make([]string, len(reqs))
	for i, r := range reqs {
		var code int
		ids[i], code = g.do(t, r.method, r.path, r.token, r.body)
		if code != r.code || ids[i] == "" {
			t.Fatalf("%s: %d (request id %q), want %d", r.name, code, ids[i], r.code)
		}
	}

	// The API server's lines, and the export's, by auditID and stage.
	want := map[string]bool{}
	for i, r := range reqs {
		for _, s := range r.stages {
			want[ids[i]+"/"+s] = true
		}
	}
	theirs := waitLines(t, func() ([]byte, error) { return os.ReadFile(logFile) }, want)
	for i, r := range reqs {
		want[ids[i]+"/ResponseComplete"] = true
		if r.name == "watch" {
			want[ids[i]+"/ResponseStarted"] = true
		}
	}
	ours := waitLines(t, func() ([]byte, error) { return g.export(t, sam) }, want)

	for i, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			if r.stages == nil {
				// Refused by the gateway: the API server never saw it; the export says so.
				o := ours[ids[i]+"/ResponseComplete"]
				if _, ok := theirs[ids[i]+"/ResponseComplete"]; ok {
					t.Error("the API server logged a request the gateway refused")
				}
				ann := o["annotations"].(map[string]any)
				if ann["authorization.k8s.io/decision"] != "forbid" || ann["kaccess.io/refusal-reason"] != "unauthenticated" ||
					path(o, "responseStatus", "code") != float64(401) {
					t.Errorf("refused line %v", o)
				}
				return
			}
			for _, stage := range r.stages {
				key := ids[i] + "/" + stage
				compare(t, stage, ours[key], theirs[key], r.body != "")
			}
		})
	}
}

// compare checks ours against the API server's line at the paths Falco reads. The gateway
// impersonates, so the API server's user is the gateway's own identity and its impersonated
// user is the person; kaccess' user is the person (see the README's Kubernetes format).
func compare(t *testing.T, stage string, ours, theirs map[string]any, sentBody bool) {
	t.Helper()
	same := func(keys ...string) {
		t.Helper()
		if o, th := path(ours, keys...), path(theirs, keys...); !reflect.DeepEqual(o, th) {
			t.Errorf("%s %s: ours %#v, API server's %#v", stage, strings.Join(keys, "."), o, th)
		}
	}
	for _, k := range [][]string{
		{"kind"}, {"apiVersion"}, {"level"}, {"auditID"}, {"stage"}, {"verb"}, {"requestURI"}, {"userAgent"},
		{"objectRef"}, {"responseStatus", "code"}, {"responseStatus", "status"}, {"responseStatus", "reason"},
		{"annotations", "authorization.k8s.io/decision"},
	} {
		same(k...)
	}
	if msg := path(ours, "responseStatus", "message"); msg != nil {
		same("responseStatus", "message")
		same("responseStatus", "details")
	}
	// Who: kaccess' user is the API server's impersonated user.
	if o, th := path(ours, "user", "username"), path(theirs, "impersonatedUser", "username"); o != th || o == nil {
		t.Errorf("%s user.username %v, API server's impersonatedUser.username %v", stage, o, th)
	}
	if path(theirs, "user", "username") != testenv.GatewayUser {
		t.Errorf("%s: the API server's user is %v, want the gateway's", stage, path(theirs, "user", "username"))
	}
	og, _ := path(ours, "user", "groups").([]any)
	tg, _ := path(theirs, "impersonatedUser", "groups").([]any)
	for _, g := range og {
		if !slices.Contains(tg, g) {
			t.Errorf("%s user.groups %v not among the API server's impersonated groups %v", stage, og, tg)
		}
	}
	// From where: the client's address is the first of the API server's (the gateway adds
	// X-Forwarded-For), and the only one kaccess keeps.
	oi, _ := path(ours, "sourceIPs").([]any)
	ti, _ := path(theirs, "sourceIPs").([]any)
	if len(oi) != 1 || len(ti) == 0 || oi[0] != ti[0] {
		t.Errorf("%s sourceIPs %v, API server's %v", stage, oi, ti)
	}
	// When: the same format, and the gateway's request received no later than the API server's.
	for _, k := range []string{"requestReceivedTimestamp", "stageTimestamp"} {
		o, _ := ours[k].(string)
		th, _ := theirs[k].(string)
		if !microTime.MatchString(o) || !microTime.MatchString(th) {
			t.Errorf("%s %s: ours %q, API server's %q, want RFC 3339 with microseconds", stage, k, o, th)
		}
	}
	if ours["requestReceivedTimestamp"].(string) > theirs["requestReceivedTimestamp"].(string) {
		t.Errorf("%s: received by the gateway at %v, after the API server at %v", stage, ours["requestReceivedTimestamp"], theirs["requestReceivedTimestamp"])
	}
	// Bodies: what Falco's ka.req.* and ka.resp.name read.
	if sentBody {
		for _, k := range []string{"kind", "apiVersion", "data"} {
			same("requestObject", k)
		}
		same("requestObject", "metadata", "name")
	}
	if path(theirs, "responseObject") != nil {
		same("responseObject", "kind")
		same("responseObject", "apiVersion")
		same("responseObject", "metadata", "name")
	}
	// Every top-level key the API server wrote is there, but impersonatedUser (kaccess' user
	// is the person already) and the bodies the API server takes from its own decoding
	// (a delete's DeleteOptions, which the client did not send).
	for k := range theirs {
		if _, ok := ours[k]; !ok && k != "impersonatedUser" && !(k == "requestObject" && !sentBody) {
			t.Errorf("%s: %s missing from ours", stage, k)
		}
	}
}

// path returns the value at keys in a decoded JSON object, nil if there is none.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// waitLines reads audit events (JSON lines) until every "auditID/stage" of want is there, and
// returns them by that key.
func waitLines(t *testing.T, read func() ([]byte, error), want map[string]bool) map[string]map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := read()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]map[string]any{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			got[fmt.Sprintf("%v/%v", ev["auditID"], ev["stage"])] = ev
		}
		missing := 0
		for k := range want {
			if got[k] == nil {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events not there after 30s", missing, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testGateway is a gateway in front of the test's cluster, writing to the embedded store.
type testGateway struct {
	*gateway.Gateway
	client *http.Client
	url    string
}

func startGateway(t *testing.T, c *testenv.Cluster, policyFile string) *testGateway {
	t.Helper()
	cfg := &config.Config{
		Listen:   config.Listen{Address: "127.0.0.1:0", OpsAddress: "127.0.0.1:0"},
		StateDir: t.TempDir(),
		Clusters: []config.Cluster{{Name: "golden", Server: c.URL, CAFile: c.CAFile, TokenFile: c.GatewayTokenFile}},
	}
	cfg.Audit.PolicyFile = policyFile
	cfg.Audit.AuditorGroups = []string{"golden:security"}
	cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lib, helper := testenv.ChDB(t)
	storeDir := t.TempDir()
	open := func(ctx context.Context) (ship.Sink, error) {
		s, err := chdb.Open(ctx, chdb.Config{Dir: storeDir, Library: lib, Helper: helper})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	logFile := filepath.Join(t.TempDir(), "gateway.log")
	logs, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), gateway.WithAuditStore(open))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
		logs.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("gateway log:\n%s", b)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.CAPEM)
	return &testGateway{Gateway: gw, url: "https://" + gw.Addr(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

func (g *testGateway) mint(t *testing.T, user string, groups ...string) string {
	t.Helper()
	token, _, err := g.Sessions().Mint(context.Background(), session.Claims{User: user, UID: "uid-" + user, Groups: groups, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// do sends one request through the gateway and returns its request id and status code.
func (g *testGateway) do(t *testing.T, method, path, token, body string) (string, int) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, g.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("User-Agent", "kaccess-golden-test/1.0")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Request-Id"), resp.StatusCode
}

// export is the REST export of the last ten minutes in the Kubernetes format.
func (g *testGateway) export(t *testing.T, token string) ([]byte, error) {
	t.Helper()
	q := url.Values{"format": {"EXPORT_FORMAT_K8S"}, "startTime": {time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)}}
	req, _ := http.NewRequest("GET", g.url+"/v1/auditevents:export?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("export: %d %s", resp.StatusCode, data)
	}
	return data, err
}
