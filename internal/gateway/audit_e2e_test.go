package gateway

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// embeddedStore opens the real embedded store (chDB) for a gateway and keeps it, so the test
// reads what the gateway wrote.
func embeddedStore(t *testing.T) (StoreOpener, func() *chdb.Store) {
	lib, helper := testenv.ChDB(t)
	dir := t.TempDir()
	var opened atomic.Pointer[chdb.Store]
	open := func(ctx context.Context) (ship.Sink, error) {
		s, err := chdb.Open(ctx, chdb.Config{Dir: dir, Library: lib, Helper: helper})
		if err != nil {
			return nil, err
		}
		opened.Store(s)
		return s, nil
	}
	return open, opened.Load
}

// eventsByRequest waits until every id has a complete (or ended) request event in the store,
// and returns those events by request id.
func eventsByRequest(t *testing.T, store func() *chdb.Store, ids ...string) map[string][]*event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string][]*event.Event{}
		if s := store(); s != nil {
			all, err := allEvents(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range all {
				got[e.RequestID] = append(got[e.RequestID], e)
			}
		}
		missing := 0
		for _, id := range ids {
			if len(got[id]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests not in the audit store after 30s", missing, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allEvents reads every stored event of every gateway instance.
func allEvents(s *chdb.Store) ([]*event.Event, error) {
	instances, err := s.QueryStrings(context.Background(), "SELECT DISTINCT gateway_instance FROM kaccess.audit_events")
	if err != nil {
		return nil, err
	}
	var all []*event.Event
	for _, inst := range instances {
		evs, err := s.Events(context.Background(), inst)
		if err != nil {
			return nil, err
		}
		all = append(all, evs...)
	}
	return all, nil
}

// requestID does one request with net/http and returns the gateway's request id and code.
// hdr are header name/value pairs, added (a second Authorization stays a second one).
func requestID(t *testing.T, g *testGateway, method, path, token string, hdr ...string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(method, g.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Request-Id"), resp.StatusCode
}

func TestAuditRecordsEveryRequestInTheEmbeddedStore(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "audit-e2e")
	c.MustGrantRole(t, "audit-e2e", "cm-editor", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps", "services"}, Verbs: []string{"get", "list", "create", "watch"},
	}}, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "audit:devs"})
	open, store := embeddedStore(t)
	g := startGateway(t, func(c *config.Config) {
		c.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
		c.Audit.AuditorGroups = []string{"audit:security"}
	}, WithAuditStore(open))
	token := g.mint(t, "alice", "audit:devs")
	auditor := g.mint(t, "sam", "audit:security")

	// A security engineer tails alice's requests (REST: one JSON object per line).
	tailed, tailing := make(chan string, 100), make(chan struct{})
	tailCtx, stopTail := context.WithCancel(context.Background())
	defer stopTail()
	go func() {
		req, _ := http.NewRequestWithContext(tailCtx, "GET", g.URL+"/v1/auditevents:tail?filter="+url.QueryEscape(`user = "alice"`), nil)
		req.Header.Set("Authorization", "Bearer "+auditor)
		client := g.httpClient()
		client.Timeout = 0
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		close(tailing)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			tailed <- sc.Text()
		}
	}()
	// Response headers of a stream come with its first event: make requests until one shows,
	// so the tail is known to be running before the requests the test looks for.
	for warm := time.Now(); ; {
		requestID(t, g, "GET", "/api/v1/namespaces/audit-e2e/configmaps?warmup=1", token)
		select {
		case <-tailing:
		case <-time.After(500 * time.Millisecond):
			if time.Since(warm) > 30*time.Second {
				t.Fatal("the tail showed nothing within 30 s")
			}
			continue
		}
		break
	}

	listID, code := requestID(t, g, "GET", "/api/v1/namespaces/audit-e2e/configmaps", token)
	if code != 200 {
		t.Fatalf("list: %d", code)
	}
	secretID, code := requestID(t, g, "GET", "/api/v1/namespaces/audit-e2e/secrets", token)
	if code != 403 {
		t.Fatalf("secrets: %d", code)
	}
	badID, code := requestID(t, g, "GET", "/api/v1/namespaces", "not-a-token")
	if code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	asID, code := requestID(t, g, "GET", "/api/v1/namespaces/audit-e2e/configmaps", token, "Impersonate-User", "admin")
	if code != 403 {
		t.Fatalf("--as admin: %d", code)
	}
	// A write through client-go, with a body the default policy records at Request level
	// (configmaps are Metadata only: they often hold credentials).
	var createID string
	cfg := g.restConfig(token)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && r.Method == "POST" {
				createID = resp.Header.Get("X-Request-Id")
			}
			return resp, err
		})
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services("audit-e2e").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "recorded", Labels: map[string]string{"colour": "blue"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	got := eventsByRequest(t, store, listID, secretID, badID, asID, createID)
	// The tail saw the list request made through the gateway.
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case line := <-tailed:
			seen = strings.Contains(line, listID)
		case <-deadline:
			t.Fatal("the tail did not show the list request within 20 s")
		}
	}
	// Search: the auditor finds the request by id; alice, no auditor, cannot see sam's query.
	code, out := api(t, g, "GET", "/v1/auditevents?filter="+url.QueryEscape(`request_id = "`+listID+`"`), auditor, nil)
	if evs, _ := out["events"].([]any); code != 200 || len(evs) != 1 {
		t.Fatalf("auditor search by request id: %d %v", code, out)
	}
	code, out = api(t, g, "GET", "/v1/auditevents?filter="+url.QueryEscape(`user = "sam"`), token, nil)
	if evs, _ := out["events"].([]any); code != 200 || len(evs) != 0 {
		t.Fatalf("alice searching sam's events: %d %v", code, out)
	}
	one := func(id string) *event.Event {
		t.Helper()
		if len(got[id]) != 1 {
			t.Fatalf("request %s has %d events, want 1", id, len(got[id]))
		}
		return got[id][0]
	}
	if e := one(listID); e.User != "alice" || e.Verb != "list" || e.Resource != "configmaps" || e.Namespace != "audit-e2e" ||
		e.ResponseCode != 200 || e.Decision != event.DecisionAllow || e.Cluster != "test" || e.BytesOut == 0 ||
		e.GatewayInstance == "" || e.Seq == 0 || !slices.Contains(e.Groups, "audit:devs") || e.Latency <= 0 {
		t.Errorf("list event: %+v", e)
	}
	if e := one(secretID); e.ResponseCode != 403 || e.Decision != event.DecisionDeny || e.Resource != "secrets" {
		t.Errorf("secrets event: %+v", e)
	}
	if e := one(badID); e.ResponseCode != 401 || e.User != "" || e.Decision != event.DecisionRefused || e.RefusalReason != "unauthenticated" {
		t.Errorf("401 event: %+v", e)
	}
	if e := one(asID); e.ImpersonatedUser != "admin" || e.ResponseCode != 403 || e.User != "alice" ||
		e.Decision != event.DecisionRefused || e.RefusalReason != "impersonation_refused" {
		t.Errorf("impersonation event: %+v", e)
	}
	if e := one(createID); e.Verb != "create" || e.ResponseCode != 201 || e.Level != event.LevelRequest ||
		!strings.Contains(string(e.RequestBody), `"colour":"blue"`) || e.ResponseBody != nil {
		t.Errorf("create event: level %s body %s code %d", e.Level, e.RequestBody, e.ResponseCode)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The embedded store's engine is checked at start: a missing libchdb.so is a configuration
// error that says what to do, not a store that never comes up. A gateway configured for a
// ClickHouse server does not need the library at all.
func TestMissingEmbeddedEngineIsAClearStartError(t *testing.T) {
	c := testenv.Shared(t)
	cfg := &config.Config{
		Listen:   config.Listen{Address: "127.0.0.1:0"},
		StateDir: t.TempDir(),
		Clusters: []config.Cluster{{Name: "test", Server: c.URL, CAFile: c.CAFile, TokenFile: c.GatewayTokenFile}},
	}
	cfg.Audit.Embedded.Library = filepath.Join(t.TempDir(), "libchdb.so")
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "libchdb.so") || !strings.Contains(err.Error(), "make chdb") ||
		!strings.Contains(err.Error(), "ClickHouse server") {
		t.Fatalf("New with no engine: %v", err)
	}
	cfg.Audit.ClickHouse = &config.AuditClickHouse{Addresses: []string{"127.0.0.1:1"}, Database: "kaccess"}
	g, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New with a ClickHouse server and no engine: %v", err)
	}
	g.api.Close()
	g.stopBackground()
	g.closeAudit()
}

// A crash while a record was being written leaves a torn tail: the next start keeps every
// complete record, cuts the torn one off, says so in the log and in a metric.
func TestTornSpoolTailIsRecoveredAndReported(t *testing.T) {
	state := t.TempDir()
	inState := func(c *config.Config) { c.StateDir = state }
	g := startGateway(t, inState)
	token := g.mint(t, "tina")
	for range 3 {
		requestID(t, g, "GET", "/api/v1/namespaces", token)
	}
	g.stop()
	segs, err := filepath.Glob(filepath.Join(state, "audit", "spool", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no spool segment: %v", err)
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The start of a record header and a few payload bytes: what a crash mid-write leaves.
	if _, err := f.Write([]byte{0x2a, 0, 0, 0, 7, 7, 7}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	g2 := startGateway(t, inState)
	if st := g2.audit.spool.Stats(); st.RecordsPending != 3 || st.TornBytesDropped != 7 {
		t.Fatalf("after recovery: %d records pending (want the 3 complete ones), %d torn bytes dropped (want 7)", st.RecordsPending, st.TornBytesDropped)
	}
	if !strings.Contains(g2.logs.String(), "torn record") {
		t.Fatalf("the recovery is not in the log:\n%s", g2.logs.String())
	}
	resp, err := http.Get(g2.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp.Body); !strings.Contains(body, "kaccess_audit_spool_torn_tail_bytes 7") {
		t.Fatal("metric kaccess_audit_spool_torn_tail_bytes 7 missing")
	}
}
