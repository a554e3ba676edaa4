package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// recordingUpstream answers 200 and keeps the headers of the last request it saw.
func recordingUpstream(t *testing.T) (*url.URL, func() http.Header) {
	t.Helper()
	seen := make(chan http.Header, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u, func() http.Header {
		select {
		case h := <-seen:
			return h
		default:
			return nil
		}
	}
}

type denyAll struct{}

func (denyAll) CheckImpersonation(context.Context, *authn.Identity, *ImpersonationRequest) (bool, string, error) {
	return false, "no", nil
}

func serve(t *testing.T, p *Proxy, id *authn.Identity, remote string, h http.Header) (*httptest.ResponseRecorder, *requestctx.State) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces", nil)
	r.RemoteAddr = remote
	for k, v := range h {
		r.Header[k] = v
	}
	st := &requestctx.State{ID: "req-1"}
	ctx := requestctx.WithState(r.Context(), st)
	if id != nil {
		ctx = authn.WithIdentity(ctx, id)
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r.WithContext(ctx))
	return w, st
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	upstream, last := recordingUpstream(t)
	p, err := New(Config{
		Cluster: "c", Upstream: upstream, Transport: http.DefaultTransport, UpgradeTransport: http.DefaultTransport,
		Impersonation: denyAll{}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	alice := &authn.Identity{User: "alice", UID: "u1", Groups: []string{"ad:devs"}, Source: "ldap:corp", SessionID: "s1"}

	tests := []struct {
		name     string
		id       *authn.Identity
		remote   string
		header   http.Header
		wantCode int
		// wantRefusal is what the audit record must say the gateway refused (or "" when it
		// forwarded), with the header names it refused.
		wantRefusal requestctx.Refusal
		wantNames   []string
		check       func(t *testing.T, up http.Header)
	}{
		{name: "identity set, client claims gone", id: alice, remote: "192.0.2.7:1234",
			header:   http.Header{"Audit-Id": {"forged"}, "X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Host": {"evil"}},
			wantCode: 200, check: func(t *testing.T, up http.Header) {
				want := map[string]string{
					"Impersonate-User": "alice", "Impersonate-Uid": "u1", "Impersonate-Group": "ad:devs",
					"Impersonate-Extra-Kaccess.io%2Fsource": "ldap:corp", "Impersonate-Extra-Kaccess.io%2Fsession-Id-Hash": authn.HashSessionID("s1"),
					"Audit-Id": "req-1", "X-Forwarded-For": "192.0.2.7", "X-Forwarded-Host": "",
				}
				for k, v := range want {
					if got := up.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
			}},
		{name: "trusted load balancer keeps the chain", id: alice, remote: "10.1.2.3:1234",
			header: http.Header{"X-Forwarded-For": {"198.51.100.9"}}, wantCode: 200,
			check: func(t *testing.T, up http.Header) {
				if got := up.Get("X-Forwarded-For"); got != "198.51.100.9, 10.1.2.3" {
					t.Errorf("X-Forwarded-For = %q", got)
				}
			}},
		{name: "no identity fails closed", remote: "192.0.2.7:1", wantCode: http.StatusUnauthorized, wantRefusal: requestctx.RefusedUnauthenticated},
		{name: "credential left on the request", id: alice, remote: "192.0.2.7:1", header: http.Header{"Authorization": {"Bearer x"}},
			wantCode: http.StatusBadRequest, wantRefusal: requestctx.RefusedIdentityHeader, wantNames: []string{"Authorization"}},
		{name: "x-remote-user", id: alice, remote: "192.0.2.7:1", header: http.Header{"X-Remote-User": {"admin"}, "Impersonate-Group": {"g"}},
			wantCode: http.StatusBadRequest, wantRefusal: requestctx.RefusedIdentityHeader, wantNames: []string{"Impersonate-Group", "X-Remote-User"}},
		{name: "hop-by-hop trick", id: alice, remote: "192.0.2.7:1", header: http.Header{"Connection": {"Impersonate-User"}},
			wantCode: http.StatusBadRequest, wantRefusal: requestctx.RefusedIdentityHeader, wantNames: []string{"Connection"}},
		{name: "impersonation refused", id: alice, remote: "192.0.2.7:1", header: http.Header{"Impersonate-User": {"admin"}},
			wantCode: http.StatusForbidden, wantRefusal: requestctx.RefusedImpersonation},
		{name: "system:masters never forwarded", id: &authn.Identity{User: "eve", Groups: []string{"system:masters"}}, remote: "192.0.2.7:1",
			wantCode: http.StatusForbidden, wantRefusal: requestctx.RefusedPrivilegedGroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, st := serve(t, p, tt.id, tt.remote, tt.header)
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body.String())
			}
			if st.Refusal != tt.wantRefusal || !slices.Equal(st.RefusedHeaders, tt.wantNames) || st.Forwarded != (tt.wantRefusal == "") {
				t.Fatalf("state: refusal %q headers %v forwarded %v; want %q %v %v", st.Refusal, st.RefusedHeaders, st.Forwarded,
					tt.wantRefusal, tt.wantNames, tt.wantRefusal == "")
			}
			up := last()
			if tt.wantCode != 200 {
				if up != nil {
					t.Fatalf("a refused request reached the upstream: %v", up)
				}
				return
			}
			if up == nil {
				t.Fatal("upstream saw nothing")
			}
			for k := range up {
				if strings.HasPrefix(k, "X-Remote-") || k == "Authorization" {
					t.Errorf("%s reached the upstream", k)
				}
			}
			tt.check(t, up)
		})
	}
}

// An API server that cannot be reached, or does not answer in time, is the gateway's answer:
// the record must say which, and whether the request may have been sent.
func TestUpstreamFailuresSayWhy(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens here any more: the dial fails
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	alice := &authn.Identity{User: "alice", Groups: []string{"devs"}}
	for _, tt := range []struct {
		name     string
		upstream string
		timeout  time.Duration
		code     int
		want     requestctx.Refusal
	}{
		{"unreachable", "http://" + closed, 0, http.StatusBadGateway, requestctx.RefusedUpstreamUnavailable},
		{"no answer in time", slow.URL, 100 * time.Millisecond, http.StatusGatewayTimeout, requestctx.FailedUpstreamTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := url.Parse(tt.upstream)
			p, err := New(Config{Cluster: "c", Upstream: u, Transport: http.DefaultTransport, UpgradeTransport: http.DefaultTransport, Impersonation: denyAll{}})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces", nil)
			st := &requestctx.State{ID: "req-1"}
			ctx := authn.WithIdentity(requestctx.WithState(r.Context(), st), alice)
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r.WithContext(ctx))
			if w.Code != tt.code || st.Refusal != tt.want || !st.Forwarded {
				t.Fatalf("code %d refusal %q forwarded %v; want %d %q true", w.Code, st.Refusal, st.Forwarded, tt.code, tt.want)
			}
		})
	}
}

// failingBody is a client body that breaks off part way, as a malformed chunk does.
type failingBody struct{ sent bool }

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, `{"kind":`), nil
	}
	return 0, errors.New("malformed chunked encoding")
}

func (b *failingBody) Close() error { return nil }

// A body that cannot be read is the client's fault, not the API server's: 400, refused as a bad
// request, not 502 "upstream failed"; and URL and headers over the limit get 431 before they go.
func TestClientFaultsAreRefusals(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(upstream.Close)
	u, _ := url.Parse(upstream.URL)
	p, err := New(Config{Cluster: "c", Upstream: u, Transport: http.DefaultTransport, UpgradeTransport: http.DefaultTransport,
		Impersonation: denyAll{}, MaxHeaderBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	alice := &authn.Identity{User: "alice"}
	do := func(r *http.Request) (int, requestctx.Refusal) {
		st := &requestctx.State{ID: "req-1"}
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r.WithContext(authn.WithIdentity(requestctx.WithState(r.Context(), st), alice)))
		return w.Code, st.Refusal
	}
	post := httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/a/configmaps", &failingBody{})
	post.ContentLength = -1
	if code, why := do(post); code != http.StatusBadRequest || why != requestctx.RefusedBadRequest {
		t.Errorf("broken body: %d %q, want 400 %q", code, why, requestctx.RefusedBadRequest)
	}
	long := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/a/configmaps?labelSelector=a%3D"+strings.Repeat("b", 8<<10), nil)
	if code, why := do(long); code != http.StatusRequestHeaderFieldsTooLarge || why != requestctx.RefusedTooLarge {
		t.Errorf("long URL: %d %q, want 431 %q", code, why, requestctx.RefusedTooLarge)
	}
	if code, why := do(httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/a/configmaps?labelSelector=a%3Db", nil)); code != http.StatusCreated || why != "" {
		t.Errorf("ordinary request: %d %q", code, why)
	}
}
