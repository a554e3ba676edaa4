package capture

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/spool"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/requestctx"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openSpool(t testing.TB, maxBytes int64) *spool.Spool {
	t.Helper()
	s, err := spool.Open(spool.Config{Dir: t.TempDir(), SegmentBytes: 64 << 10, MaxBytes: maxBytes,
		SyncInterval: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// records returns every event appended so far, without acknowledging them.
func records(t *testing.T, s *spool.Spool) []event.Event {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if s.Stats().RecordsPending == 0 {
		return nil
	}
	b, err := s.Reader().Next(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for _, r := range b.Records {
		var e event.Event
		if err := event.Unmarshal(r.Payload, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

var infoFactory = &genericrequest.RequestInfoFactory{
	APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api"),
}

// chain is the part of the gateway's chain around capture: state and request info outside,
// an authentication stand-in inside (alice, unless the request has no Authorization header).
func chain(t testing.TB, c *Capture, inner http.Handler) http.Handler {
	return chainAround(t, func(h http.Handler) http.Handler { return c.Handler("prod", h) }, inner)
}

// chainAround is chain with wrap in capture's place.
func chainAround(t testing.TB, wrap func(http.Handler) http.Handler, inner http.Handler) http.Handler {
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := requestctx.From(r.Context())
		if r.Header.Get("Authorization") == "" {
			requestctx.Refuse(r.Context(), requestctx.RefusedUnauthenticated)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		st.User = "alice"
		st.Identity = &authn.Identity{User: "alice", UID: "u-1", Groups: []string{"corp:devs"}, Source: "ldap:corp", SessionID: "sess"}
		if as := r.Header.Get("Impersonate-User"); as != "" {
			st.ImpersonatedUser = as
		}
		// inner stands for the proxy and the API server behind it.
		st.Forwarded = true
		inner.ServeHTTP(w, r)
	})
	h := wrap(auth)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := infoFactory.NewRequestInfo(r)
		if err != nil {
			t.Errorf("request info: %v", err)
		}
		st := &requestctx.State{ID: "req-" + r.URL.Path, LongRunning: info.Verb == "watch"}
		ctx := genericrequest.WithRequestInfo(requestctx.WithState(r.Context(), st), info)
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func newCapture(t testing.TB, s *spool.Spool, mut func(*Config)) *Capture {
	t.Helper()
	cfg := Config{Log: s, Logger: quiet}
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func do(t *testing.T, srv *httptest.Server, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer x")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(b)
}

func TestRecordIsAppendedBeforeTheLastByte(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	var beforeLast, afterLast uint64
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.Write([]byte("12345"))
		beforeLast = s.Stats().Appends
		w.Write([]byte("67890"))
		afterLast = s.Stats().Appends
	})))
	defer srv.Close()
	resp, body := do(t, srv, "GET", "/api/v1/namespaces/demo/pods/web", "")
	if resp.StatusCode != 200 || body != "1234567890" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if beforeLast != 0 || afterLast != 1 {
		t.Fatalf("appends before the last write %d, after %d; want 0 then 1", beforeLast, afterLast)
	}
	recs := records(t, s)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	e := recs[0]
	if e.User != "alice" || e.UID != "u-1" || e.Source != "ldap:corp" || e.Verb != "get" || e.Resource != "pods" ||
		e.Namespace != "demo" || e.Name != "web" || e.ResponseCode != 200 || e.Decision != event.DecisionAllow ||
		e.BytesOut != 10 || e.Cluster != "prod" || e.RequestID != "req-/api/v1/namespaces/demo/pods/web" ||
		e.Stage != event.StageComplete || e.Level != event.LevelMetadata || e.SourceIP != "127.0.0.1" ||
		e.SessionIDHash != event.HashSessionID("sess") || e.Method != "GET" || e.EventID == "" {
		t.Fatalf("record: %+v", e)
	}
}

func TestChunkedResponseIsRecordedBeforeItEnds(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 10000))) // no Content-Length: chunked
		if n := s.Stats().Appends; n != 0 {
			t.Errorf("%d appends before the handler returned, want 0", n)
		}
	})))
	defer srv.Close()
	_, body := do(t, srv, "GET", "/api/v1/pods", "")
	// The client has the whole response, so the record must be in the spool already.
	if n := s.Stats().Appends; n != 1 || len(body) != 10000 {
		t.Fatalf("appends %d body %d", n, len(body))
	}
	if e := records(t, s)[0]; e.BytesOut != 10000 || e.Verb != "list" {
		t.Fatalf("record %+v", e)
	}
}

func TestUnauthenticatedAndImpersonationAreRecorded(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	})))
	defer srv.Close()
	do(t, srv, "GET", "/api/v1/secrets", "", "Authorization", "")
	do(t, srv, "GET", "/api/v1/secrets", "", "Impersonate-User", "admin")
	recs := records(t, s)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	if e := recs[0]; e.User != "" || e.ResponseCode != 401 || e.Decision != event.DecisionRefused || e.RefusalReason != "unauthenticated" {
		t.Fatalf("unauthenticated: %+v", e)
	}
	if e := recs[1]; e.User != "alice" || e.ImpersonatedUser != "admin" || e.ResponseCode != 403 || e.Decision != event.DecisionDeny {
		t.Fatalf("impersonation: %+v", e)
	}
}

func TestBodiesFollowThePolicyAndAreRedacted(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		w.Write(b)
	})))
	defer srv.Close()
	cm := `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"data":{"password":"hunter2","k":"v"}}`
	do(t, srv, "POST", "/api/v1/namespaces/demo/configmaps", cm, "Content-Type", "application/json")
	deploy := `{"kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":2}}`
	do(t, srv, "POST", "/apis/apps/v1/namespaces/demo/deployments", deploy, "Content-Type", "application/json")
	rb := `{"kind":"RoleBinding","metadata":{"name":"rb"},"roleRef":{"name":"admin"}}`
	do(t, srv, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings", rb, "Content-Type", "application/json")
	recs := records(t, s)
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	// configmaps: Metadata by the default policy, so no body at all.
	if e := recs[0]; e.Level != event.LevelMetadata || e.RequestBody != nil || e.BytesIn != int64(len(cm)) {
		t.Fatalf("configmap: level %s body %s in %d", e.Level, e.RequestBody, e.BytesIn)
	}
	if e := recs[1]; e.Level != event.LevelRequest || !strings.Contains(string(e.RequestBody), `"replicas":2`) || e.ResponseBody != nil {
		t.Fatalf("deployment: level %s req %s resp %s", e.Level, e.RequestBody, e.ResponseBody)
	}
	if e := recs[2]; e.Level != event.LevelRequestResponse || !strings.Contains(string(e.ResponseBody), `"admin"`) ||
		!strings.Contains(string(e.RequestBody), `"rb"`) {
		t.Fatalf("rolebinding: level %s req %s resp %s", e.Level, e.RequestBody, e.ResponseBody)
	}
}

func TestPolicyNoneRecordsNothing(t *testing.T) {
	s := openSpool(t, 8<<20)
	p, err := event.LoadPolicy([]byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: \"\", resources: [\"events\"]}]\n- level: Metadata\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCapture(t, s, func(c *Config) { c.Policy = p })
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	do(t, srv, "GET", "/api/v1/events", "")
	do(t, srv, "GET", "/api/v1/pods", "")
	if recs := records(t, s); len(recs) != 1 || recs[0].Resource != "pods" {
		t.Fatalf("records %+v", recs)
	}
}

func TestWatchHasStartedAndEndedRecords(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	release := make(chan struct{})
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write([]byte("{\"type\":\"ADDED\"}\n"))
		w.(http.Flusher).Flush()
		<-release
	})))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/demo/pods?watch=true", nil)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.Contains(line, "ADDED") {
		t.Fatalf("first event %q", line)
	}
	if n := s.Stats().Appends; n != 1 {
		t.Fatalf("%d appends once the stream started, want 1 (started)", n)
	}
	close(release)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	recs := records(t, s)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	st, end := recs[0], recs[1]
	if st.Stage != event.StageStarted || end.Stage != event.StageEnded || st.RequestID != end.RequestID ||
		st.EventID == end.EventID || end.Duration <= 0 || end.BytesOut == 0 || st.Verb != "watch" {
		t.Fatalf("started %+v\nended %+v", st, end)
	}
}

// A watch whose ended record cannot be appended (the spool closed, as a full disk would fail
// it) must not end cleanly for the client: it is cut off, so every watch a client saw end has
// both records (make soak found watches that ended during a full disk with only one).
func TestWatchWithoutEndedRecordIsCutOff(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	release := make(chan struct{})
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write([]byte("{\"type\":\"ADDED\"}\n"))
		w.(http.Flusher).Flush()
		<-release
		s.Close()
	})))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/demo/pods?watch=true", nil)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(release)
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the watch ended cleanly although its ended record was not written")
	}
}

func TestFullSpoolRefusesOrDrops(t *testing.T) {
	s := openSpool(t, 64<<10)
	reached := 0
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })
	deny := newCapture(t, s, func(c *Config) { c.Reserve = 64 << 10 })
	srv := httptest.NewServer(chain(t, deny, inner))
	resp, body := do(t, srv, "DELETE", "/api/v1/namespaces/demo/pods/web", "")
	srv.Close()
	if resp.StatusCode != 503 || !strings.Contains(body, "audit spool is full") || reached != 0 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("deny: %d %q reached %d", resp.StatusCode, body, reached)
	}
	if st := deny.Stats(); st.Refused != 1 || st.Recorded != 0 {
		t.Fatalf("deny stats %+v", st)
	}
	drop := newCapture(t, s, func(c *Config) { c.Reserve = 64 << 10; c.OnFull = OnFullDrop })
	srv = httptest.NewServer(chain(t, drop, inner))
	resp, _ = do(t, srv, "DELETE", "/api/v1/namespaces/demo/pods/web", "")
	srv.Close()
	if resp.StatusCode != 200 || reached != 1 || drop.Stats().Dropped != 1 {
		t.Fatalf("drop: %d reached %d stats %+v", resp.StatusCode, reached, drop.Stats())
	}
}

// A record that cannot be appended (here: the spool is closed under the request) must not
// leave the client with a complete response.
func TestFailedAppendWithholdsTheResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter)
	}{
		{"known length", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "4")
			w.Write([]byte("done"))
		}},
		{"chunked", func(w http.ResponseWriter) { w.Write([]byte("done")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openSpool(t, 8<<20)
			c := newCapture(t, s, nil)
			srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.Close()
				tc.handler(w)
			})))
			defer srv.Close()
			req, _ := http.NewRequest("DELETE", srv.URL+"/api/v1/namespaces/demo/pods/web", nil)
			req.Header.Set("Authorization", "Bearer x")
			resp, err := srv.Client().Do(req)
			if err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil && resp.StatusCode == 200 && string(body) == "done" {
					t.Fatalf("the client got a complete response that was not recorded")
				}
			}
			if c.Stats().Failed != 1 {
				t.Fatalf("stats %+v", c.Stats())
			}
		})
	}
}

func TestStrictModeWaitsForTheFsync(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, func(c *Config) { c.Strict = true })
	srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	do(t, srv, "GET", "/api/v1/pods", "")
	if st := s.Stats(); st.SyncedSeq != st.LastSeq || st.LastSeq == 0 {
		t.Fatalf("strict: synced %d of %d when the response arrived", st.SyncedSeq, st.LastSeq)
	}
}

func TestRecordStateChange(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	e := &event.Event{Kind: event.KindLogin, User: "alice", Extra: map[string]string{"source": "corp"}}
	if err := c.Record(e); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := c.Record(&event.Event{Kind: event.KindLogout}); err == nil {
		t.Fatal("Record on a closed spool: want ErrNotRecorded")
	}
}

func TestClientIP(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		remote, xff string
		trusted     []netip.Prefix
		want        string
	}{
		{"192.0.2.1:5000", "198.51.100.7", nil, "192.0.2.1"},
		{"192.0.2.1:5000", "198.51.100.7", lb, "192.0.2.1"},                      // not from the LB: header ignored
		{"10.1.1.1:5000", "198.51.100.7", lb, "198.51.100.7"},                    // from the LB
		{"10.1.1.1:5000", "6.6.6.6, 198.51.100.7, 10.2.2.2", lb, "198.51.100.7"}, // forged left entry skipped
		{"10.1.1.1:5000", "", lb, "10.1.1.1"},
		{"10.1.1.1:5000", "not-an-ip", lb, "10.1.1.1"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := clientIP(r, tc.trusted); got != tc.want {
			t.Errorf("clientIP(%s, %q) = %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}
