package capture

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/requestctx"
)

func TestOutcome(t *testing.T) {
	t.Parallel()
	fwd := func() *requestctx.State { return &requestctx.State{Forwarded: true} }
	refused := func(r requestctx.Refusal) *requestctx.State { return &requestctx.State{Refusal: r} }
	tests := []struct {
		name       string
		code       int
		st         *requestctx.State
		want       event.Decision
		wantReason requestctx.Refusal
	}{
		{"API server answered", 200, fwd(), event.DecisionAllow, ""},
		{"API server: not found after authorizing", 404, fwd(), event.DecisionAllow, ""},
		{"API server: conflict", 409, fwd(), event.DecisionAllow, ""},
		{"API server: invalid", 422, fwd(), event.DecisionAllow, ""},
		{"API server: bad request after authorizing", 400, fwd(), event.DecisionAllow, ""},
		{"API server forbids", 403, fwd(), event.DecisionDeny, ""},
		{"API server refuses the gateway's credential", 401, fwd(), event.DecisionError, ""},
		{"API server throttles", 429, fwd(), event.DecisionError, ""},
		{"API server fails", 500, fwd(), event.DecisionError, ""},
		{"upgrade", 101, fwd(), event.DecisionAllow, ""},
		{"smuggled header", 400, refused(requestctx.RefusedIdentityHeader), event.DecisionRefused, requestctx.RefusedIdentityHeader},
		{"impersonation refused", 403, refused(requestctx.RefusedImpersonation), event.DecisionRefused, requestctx.RefusedImpersonation},
		{"no credential", 401, refused(requestctx.RefusedUnauthenticated), event.DecisionRefused, requestctx.RefusedUnauthenticated},
		{"unreachable", 502, refused(requestctx.RefusedUpstreamUnavailable), event.DecisionRefused, requestctx.RefusedUpstreamUnavailable},
		// A reason wins over Forwarded: the gateway answered after handing the request on.
		{"timeout after forwarding", 504, &requestctx.State{Forwarded: true, Refusal: requestctx.FailedUpstreamTimeout}, event.DecisionError, requestctx.FailedUpstreamTimeout},
		{"body too large while forwarding", 413, &requestctx.State{Forwarded: true, Refusal: requestctx.RefusedTooLarge}, event.DecisionRefused, requestctx.RefusedTooLarge},
		// A gateway answer no step explained is never "allow".
		{"unexplained 400", 400, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedBadRequest},
		{"unexplained 200", 200, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedBadRequest},
		{"unexplained 403", 403, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedBadRequest},
		{"unexplained 401", 401, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedUnauthenticated},
		{"unexplained 413", 413, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedTooLarge},
		{"unexplained 429", 429, &requestctx.State{}, event.DecisionRefused, requestctx.RefusedRateLimited},
		{"unexplained 503", 503, &requestctx.State{}, event.DecisionError, requestctx.FailedInternal},
		{"no state at all", 403, nil, event.DecisionDeny, ""},
	}
	for _, tt := range tests {
		d, reason := outcome(tt.code, tt.st)
		if d != tt.want || reason != tt.wantReason {
			t.Errorf("%s: outcome(%d) = %s/%q, want %s/%q", tt.name, tt.code, d, reason, tt.want, tt.wantReason)
		}
	}
}

// A request refused for identity headers carries their names, never their values.
func TestRefusedHeaderNamesAreRecorded(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	srv := httptest.NewServer(chainAround(t, func(h http.Handler) http.Handler { return c.Handler("prod", h) },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := requestctx.From(r.Context())
			st.Forwarded = false // refused before forwarding, as the proxy does
			requestctx.Refuse(r.Context(), requestctx.RefusedIdentityHeader, "Impersonate-Group", "X-Remote-User")
			http.Error(w, "header X-Remote-User is not accepted", http.StatusBadRequest)
		})))
	defer srv.Close()
	do(t, srv, "GET", "/api/v1/namespaces/kube-system/secrets", "", "X-Remote-User", "secret-value")
	e := records(t, s)[0]
	if e.Decision != event.DecisionRefused || e.RefusalReason != "identity_header" || e.ResponseCode != 400 ||
		e.Extra[refusedHeadersKey] != "Impersonate-Group,X-Remote-User" {
		t.Fatalf("record %+v", e)
	}
}

// A handler that panics, or a response ReverseProxy abandons part way, still leaves a record.
func TestPanicsAreRecorded(t *testing.T) {
	s := openSpool(t, 8<<20)
	c := newCapture(t, s, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/namespaces/a/pods", func(w http.ResponseWriter, r *http.Request) { panic("bug") })
	mux.HandleFunc("/api/v1/namespaces/b/pods", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial")) // chunked: the record is owed at the end
		panic(http.ErrAbortHandler)
	})
	recoverAll := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil && v != http.ErrAbortHandler {
					http.Error(w, "internal error", http.StatusInternalServerError)
				}
			}()
			h.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(recoverAll(chain(t, c, mux)))
	defer srv.Close()
	for _, ns := range []string{"a", "b"} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/"+ns+"/pods", nil)
		req.Header.Set("Authorization", "Bearer x")
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}
	recs := records(t, s)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(recs), recs)
	}
	byNS := map[string]event.Event{recs[0].Namespace: recs[0], recs[1].Namespace: recs[1]}
	if e := byNS["a"]; e.ResponseCode != 500 || e.Decision != event.DecisionError || e.RefusalReason != "internal_error" {
		t.Errorf("panic: %+v", e)
	}
	if e := byNS["b"]; e.ResponseCode != 200 || e.Decision != event.DecisionError || e.RefusalReason != "response_aborted" {
		t.Errorf("aborted response: %+v", e)
	}
}

// fakeLog is a spool whose free space the test sets, for the spool-full bookkeeping.
type fakeLog struct {
	mu      sync.Mutex
	free    int64
	records [][]byte
}

func (l *fakeLog) Append(p []byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free <= 0 {
		return 0, errors.New("spool full")
	}
	l.records = append(l.records, append([]byte(nil), p...))
	return uint64(len(l.records)), nil
}
func (l *fakeLog) AppendSync(p []byte) (uint64, error) { return l.Append(p) }
func (l *fakeLog) Free() int64                         { l.mu.Lock(); defer l.mu.Unlock(); return l.free }
func (l *fakeLog) setFree(n int64)                     { l.mu.Lock(); l.free = n; l.mu.Unlock() }

// Requests refused while the spool is full cannot be recorded one by one; once it takes
// records again, one spool_full record says how many there were and when.
func TestSpoolFullGapIsRecorded(t *testing.T) {
	for _, mode := range []OnFull{OnFullDeny, OnFullDrop} {
		t.Run(string(mode), func(t *testing.T) {
			log := &fakeLog{free: 1 << 30}
			c, err := New(Config{Log: log, Logger: quiet, OnFull: mode})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(chain(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
			defer srv.Close()
			do(t, srv, "GET", "/api/v1/namespaces/demo/pods", "")
			log.setFree(0)
			for range 3 {
				do(t, srv, "GET", "/api/v1/namespaces/demo/pods", "")
			}
			if n := len(log.records); n != 1 {
				t.Fatalf("%d records while full, want the 1 from before", n)
			}
			log.setFree(1 << 30)
			do(t, srv, "GET", "/api/v1/namespaces/demo/pods", "")
			if n := len(log.records); n != 3 {
				t.Fatalf("%d records after the spool has room, want 3 (before, gap, after)", n)
			}
			var gap event.Event
			if err := event.Unmarshal(log.records[1], &gap); err != nil {
				t.Fatal(err)
			}
			wantDecision, refused, dropped := event.DecisionRefused, "3", "0"
			if mode == OnFullDrop {
				wantDecision, refused, dropped = event.DecisionError, "0", "3"
			}
			if gap.Kind != event.KindSpoolFull || gap.Decision != wantDecision || gap.RefusalReason != "audit_spool_full" ||
				gap.Extra["refused"] != refused || gap.Extra["dropped"] != dropped || gap.Extra["until"] == "" || gap.Time.IsZero() {
				t.Fatalf("gap record %+v", gap)
			}
			do(t, srv, "GET", "/api/v1/namespaces/demo/pods", "")
			if n := len(log.records); n != 4 {
				t.Fatalf("%d records: the gap was recorded twice", n)
			}
		})
	}
}
