package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

// alicePassword is distinctive so a test can look for it in the logs.
const alicePassword = "Tr0ub4dor&3-never-logged"

// fakeDirectory is a PasswordSource over a map: user -> password -> identity.
type fakeDirectory map[string]struct {
	password string
	identity authn.Identity
	err      error // returned after a right password (disabled, locked, expired)
}

func (d fakeDirectory) Login(_ context.Context, username, password string) (*authn.Identity, error) {
	u, ok := d[username]
	if !ok || u.password != password {
		return nil, fmt.Errorf("%w: bind as %q failed (data 52e)", authn.ErrInvalidCredentials, username)
	}
	if u.err != nil {
		return nil, u.err
	}
	id := u.identity
	return &id, nil
}

// failingSource always fails with err.
func failingSource(err error) authn.PasswordSource {
	return authn.PasswordFunc(func(context.Context, string, string) (*authn.Identity, error) { return nil, err })
}

// syncBuffer is the captured log, written by the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testServer struct {
	addr     string
	tls      *tls.Config // client side: trusts the server's CA
	logs     *syncBuffer
	sessions *session.Manager
	logins   *loginCounts
}

// loginCounts records Config.OnLogin calls: "source/outcome" -> count.
type loginCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *loginCounts) add(source, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[source+"/"+outcome]++
}

func (c *loginCounts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// startServer runs a Server on 127.0.0.1:0 over real TLS, with a real session.Manager and
// fake directories: "corp" (alice, plus accounts that are locked or disabled), "down" (the
// directory cannot be reached) and "busy" (rate limited).
func startServer(t *testing.T) *testServer {
	t.Helper()
	return startServerRecording(t, discard{})
}

// startServerRecording is startServer with state events going to rec.
func startServerRecording(t *testing.T, rec Recorder) *testServer {
	t.Helper()
	certFile, keyFile, caPEM, err := tlsutil.EnsureSelfSigned(t.TempDir(), []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mgr, err := session.NewManager(session.Config{Issuer: "kaccess-test", KeysDir: t.TempDir(), TTL: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	corp := fakeDirectory{
		"alice": {password: alicePassword, identity: authn.Identity{
			User: "alice", UID: "0b1c-alice", Groups: []string{"ad:k8s-devs", "ad:engineering"}, Source: "ldap:corp"}},
		"dave": {password: "pw-dave", err: fmt.Errorf("%w: userAccountControl 0x202", authn.ErrAccountDisabled)},
		"lou":  {password: "pw-lou", err: fmt.Errorf("%w: data 775", authn.ErrAccountLocked)},
	}
	logins := &loginCounts{n: map[string]int{}}
	srv, err := New(Config{
		OnLogin:       logins.add,
		Sessions:      mgr,
		Authenticator: authn.Union{authn.Sessions{Verifier: mgr}},
		Sources: map[string]Source{
			"corp": {Type: "activedirectory", Passwords: corp},
			"down": {Type: "ldap", Passwords: failingSource(fmt.Errorf("%w: dial ldaps://127.0.0.1:1: connection refused", authn.ErrDirectoryUnavailable))},
			"busy": {Type: "ldap", Passwords: failingSource(fmt.Errorf("%w: 5 failures in 1m", authn.ErrTooManyAttempts))},
		},
		Audit:  rec,
		Logger: log,
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testServer{
		addr:     ln.Addr().String(),
		tls:      &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		logs:     logs,
		sessions: mgr,
		logins:   logins,
	}
}

func (ts *testServer) grpcConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(ts.tls.Clone())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpClient speaks HTTP/1.1, or HTTP/2 when h2 is set.
func (ts *testServer) httpClient(t *testing.T, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: ts.tls.Clone(), ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (ts *testServer) url(path string) string { return "https://" + ts.addr + path }

func sessionClaims(user string) session.Claims {
	return session.Claims{User: user, Groups: []string{"g"}, Source: "test"}
}
