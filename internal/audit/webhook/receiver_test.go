package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// memRecorder keeps batches in memory, failing while fail is set (a full spool).
type memRecorder struct {
	mu     sync.Mutex
	fail   bool
	events []*event.Event
}

func (m *memRecorder) RecordBatch(evs []*event.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("spool full")
	}
	m.events = append(m.events, evs...)
	return nil
}

const token = "0123456789abcdef0123456789abcdef-token"

func newReceiver(t *testing.T, rec Recorder, gateway ...string) *Receiver {
	t.Helper()
	r, err := New(Config{Cluster: "prod", Recorder: rec, Token: token, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		GatewayUsers: func(context.Context) ([]string, error) { return gateway, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func post(t *testing.T, r http.Handler, auth, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/audit-webhook/prod", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

// batch is an EventList as kube-apiserver's webhook sends it: a direct admin create of a
// Secret (whose data must be redacted), a watch that started, and the gateway's own
// impersonated request, each with its RequestReceived stage too.
const batch = `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
{"level":"RequestResponse","auditID":"a-1","stage":"RequestReceived","requestURI":"/api/v1/namespaces/prod/secrets","verb":"create",
 "user":{"username":"jane","groups":["system:authenticated"]},"sourceIPs":["10.0.0.9"],"userAgent":"kubectl/v1.32.0",
 "objectRef":{"resource":"secrets","namespace":"prod","apiVersion":"v1"},
 "requestReceivedTimestamp":"2026-12-02T10:00:00.000001Z","stageTimestamp":"2026-12-02T10:00:00.000001Z"},
{"level":"RequestResponse","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets","verb":"create",
 "user":{"username":"jane","uid":"u-j","groups":["system:authenticated"],"extra":{"x":["y"]}},"sourceIPs":["10.0.0.9","10.0.0.1"],"userAgent":"kubectl/v1.32.0",
 "objectRef":{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},
 "requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db"},"data":{"password":"aHVudGVyMg=="}},
 "responseObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"prod"},"data":{"password":"aHVudGVyMg=="}},
 "requestReceivedTimestamp":"2026-12-02T10:00:00.000001Z","stageTimestamp":"2026-12-02T10:00:00.004001Z",
 "annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"admins\""}},
{"level":"Metadata","auditID":"w-1","stage":"ResponseStarted","requestURI":"/api/v1/pods?watch=true","verb":"watch",
 "user":{"username":"system:serviceaccount:ci:robot"},"objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},
 "requestReceivedTimestamp":"2026-12-02T10:00:01.000000Z","stageTimestamp":"2026-12-02T10:00:01.000100Z","annotations":{"authorization.k8s.io/decision":"allow"}},
{"level":"Metadata","auditID":"g-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/configmaps","verb":"create",
 "user":{"username":"system:serviceaccount:kaccess-system:kaccess-gateway"},"impersonatedUser":{"username":"alice","groups":["corp:devs"]},
 "objectRef":{"resource":"configmaps","namespace":"prod"},"responseStatus":{"metadata":{},"code":201},
 "requestReceivedTimestamp":"2026-12-02T10:00:02.000000Z","stageTimestamp":"2026-12-02T10:00:02.001000Z","annotations":{"authorization.k8s.io/decision":"allow"}},
{"level":"Metadata","auditID":"d-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets","verb":"list",
 "user":{"username":"mallory"},"objectRef":{"resource":"secrets","namespace":"kube-system"},"responseStatus":{"metadata":{},"status":"Failure","code":403},
 "requestReceivedTimestamp":"2026-12-02T10:00:03.000000Z","stageTimestamp":"2026-12-02T10:00:03.001000Z","annotations":{"authorization.k8s.io/decision":"forbid"}}
]}`

func TestBatchIsMappedAndJoined(t *testing.T) {
	rec := &memRecorder{}
	r := newReceiver(t, rec, "system:serviceaccount:kaccess-system:kaccess-gateway")
	if w := post(t, r, "Bearer "+token, batch); w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if len(rec.events) != 3 {
		t.Fatalf("%d records, want 3 (the create, the watch start, the forbidden list): %+v", len(rec.events), rec.events)
	}
	create, watch, denied := rec.events[0], rec.events[1], rec.events[2]
	if create.RequestID != "a-1" || create.Source != Source || create.Cluster != "prod" || create.User != "jane" || create.UID != "u-j" ||
		create.Verb != "create" || create.Resource != "secrets" || create.Namespace != "prod" || create.Name != "db" ||
		create.ResponseCode != 201 || create.Decision != event.DecisionAllow || create.SourceIP != "10.0.0.9" ||
		create.Stage != event.StageComplete || create.Latency != 4*time.Millisecond || create.Level != event.LevelRequestResponse ||
		!create.Time.Equal(time.Date(2026, 12, 2, 10, 0, 0, 1000, time.UTC)) ||
		!strings.HasPrefix(create.Extra["authorization.k8s.io/reason"], "RBAC: allowed") {
		t.Errorf("create: %+v", create)
	}
	for _, body := range [][]byte{create.RequestBody, create.ResponseBody} {
		if len(body) == 0 || bytes.Contains(body, []byte("aHVudGVyMg")) {
			t.Errorf("secret data not redacted (or body missing): %s", body)
		}
	}
	if watch.Stage != event.StageStarted || watch.User != "system:serviceaccount:ci:robot" || watch.Verb != "watch" {
		t.Errorf("watch: %+v", watch)
	}
	if denied.Decision != event.DecisionDeny || denied.ResponseCode != 403 || denied.User != "mallory" {
		t.Errorf("denied: %+v", denied)
	}
	if create.EventID == "" || create.EventID == denied.EventID {
		t.Errorf("event ids %q %q", create.EventID, denied.EventID)
	}
}

// The API server retries a batch whose answer it did not get: the copy is not stored again,
// and a batch that could not be recorded is taken in full when it comes back.
func TestRetriedBatchesAreStoredOnce(t *testing.T) {
	rec := &memRecorder{fail: true}
	r := newReceiver(t, rec)
	if w := post(t, r, "Bearer "+token, batch); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("with the spool full: %d, Retry-After %q; want 503 with Retry-After (the API server retries those)", w.Code, w.Header().Get("Retry-After"))
	}
	rec.fail = false
	for range 2 {
		if w := post(t, r, "Bearer "+token, batch); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	}
	// Without the gateway's identity known, its impersonated request is kept too.
	if len(rec.events) != 4 {
		t.Fatalf("%d records after a failed try and two deliveries, want 4", len(rec.events))
	}
	first := rec.events[0].EventID
	rec2 := &memRecorder{}
	r2 := newReceiver(t, rec2)
	post(t, r2, "Bearer "+token, batch)
	if rec2.events[0].EventID != first {
		t.Errorf("event ids differ between receivers (%s, %s): a copy another replica stores must be recognisable", rec2.events[0].EventID, first)
	}
}

func TestRefusals(t *testing.T) {
	rec := &memRecorder{}
	r := newReceiver(t, rec)
	tests := []struct {
		name, auth, body string
		want             int
	}{
		{"no credential", "", batch, 401},
		{"wrong token", "Bearer " + token + "x", batch, 401},
		{"not bearer", "Basic " + token, batch, 401},
		{"not an EventList", "Bearer " + token, `{"items": 3}`, 400},
		{"other version", "Bearer " + token, `{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}`, 400},
		{"too large", "Bearer " + token, `{"items":[` + strings.Repeat(" ", 33<<20) + `]}`, 413},
	}
	for _, tt := range tests {
		if w := post(t, r, tt.auth, tt.body); w.Code != tt.want {
			t.Errorf("%s: %d, want %d: %s", tt.name, w.Code, tt.want, w.Body)
		}
	}
	if len(rec.events) != 0 {
		t.Fatalf("refused batches stored %d records", len(rec.events))
	}
	if _, err := New(Config{Cluster: "prod", Recorder: rec}); err == nil {
		t.Error("a receiver without a token or client CAs was accepted")
	}
}

func TestRecentForgetsAfterTwoPeriods(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRecent(time.Minute, 2, func() time.Time { return now })
	r.add([]string{"a"})
	if !r.seen("a") {
		t.Fatal("a not seen")
	}
	now = now.Add(61 * time.Second)
	r.add([]string{"b"}) // rotates: a in the previous generation
	if !r.seen("a") || !r.seen("b") {
		t.Fatal("lost a key after one period")
	}
	now = now.Add(61 * time.Second)
	r.add([]string{"c"})
	if r.seen("a") {
		t.Fatal("a remembered after two periods")
	}
	r.add([]string{"d", "e"}) // over max: rotates early, memory stays bounded
	if len(r.cur) > 2 || len(r.prev) > 2 {
		t.Fatalf("generations of %d and %d keys, max 2", len(r.cur), len(r.prev))
	}
}
