package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"

	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

const requestPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cli-viewer
    ref: {kind: ClusterRole, name: view}
elevations:
  - name: cli-view
    role: cli-viewer
    namespaces: [cli-grants]
    requesters: ["corp:devs"]
    approvers: ["corp:sre"]
    maxDuration: 2h
`

// lockedBuffer is written by a command running in another goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// accessGateway serves the gateway API with AccessService on the shared cluster and returns
// its URL and a session store per user (alice requests and is an approver too, bob
// approves, dan only requests, eve is neither).
func accessGateway(t *testing.T) (string, map[string]Store) {
	t.Helper()
	c := testenv.Shared(t)
	c.MustNamespace(t, "cli-grants")
	dyn, err := dynamic.NewForConfig(c.GatewayConfig())
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load([]byte(requestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := access.NewService(access.ServiceConfig{Client: dyn, Policy: p, Logger: log,
		Recorder: access.RecorderFunc(func(*event.Event) error { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := session.NewManager(session.Config{Issuer: "kaccess-test", KeysDir: t.TempDir(), TTL: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caPEM, err := tlsutil.EnsureSelfSigned(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{
		Sessions: mgr, Authenticator: authn.Union{authn.Sessions{Verifier: mgr}}, Logger: log,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Access: svc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Close)
	url := "https://" + ln.Addr().String()
	stores := map[string]Store{}
	for user, groups := range map[string][]string{"alice": {"corp:devs", "corp:sre"}, "bob": {"corp:sre"}, "dan": {"corp:devs"}, "eve": {"corp:other"}} {
		tok, claims, err := mgr.Mint(context.Background(), session.Claims{User: user, Groups: groups, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		st := Store{Dir: t.TempDir()}
		if err := st.Save(&Session{Server: url, Source: "test", Username: user, Token: tok, ExpiresAt: claims.ExpiresAt, CAData: caPEM}); err != nil {
			t.Fatal(err)
		}
		stores[user] = st
	}
	return url, stores
}

// kaccess runs the access commands as the person whose sessions store holds, writing to out.
func kaccess(ctx context.Context, store Store, out io.Writer, args ...string) error {
	s := Streams{In: strings.NewReader(""), Out: out, Err: io.Discard}
	getStore := func() (Store, error) { return store, nil }
	root := &cobra.Command{Use: "kaccess", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newRequestCommand(s, getStore), newGrantsCommand(s, getStore))
	root.SetArgs(args)
	root.SetOut(out)
	return root.ExecuteContext(ctx)
}

func runAs(t *testing.T, store Store, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := kaccess(ctx, store, &out, args...)
	return out.String(), err
}

// pendingFor returns the name of the one request bob sees pending, waiting for it to appear.
func pendingFor(t *testing.T, url string, bob Store) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := runAs(t, bob, "request", "list", "--pending", "-o", "json", "--server", url)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			AccessRequests []struct {
				Name string `json:"name"`
			} `json:"accessRequests"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(list.AccessRequests) == 1 {
			return list.AccessRequests[0].Name
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob sees %d pending requests, want 1: %s", len(list.AccessRequests), out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRequestWaitApproveGrantsRevoke(t *testing.T) {
	url, users := accessGateway(t)
	alice, bob, eve := users["alice"], users["bob"], users["eve"]

	// alice asks and waits; bob finds the request among those to review and approves it.
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- kaccess(ctx, alice, out, "request", "create", "cli-view", "--for", "30m", "--reason", "debug the rollout",
			"--ticket", "INC-7", "--wait", "--poll-interval", "50ms", "--server", url)
	}()
	name := pendingFor(t, url, bob)
	if _, err := runAs(t, alice, "request", "approve", name, "--server", url); err == nil || !strings.Contains(err.Error(), "cannot approve their own request") {
		t.Errorf("self-approval: %v", err)
	}
	if _, err := runAs(t, eve, "request", "approve", name, "--server", url); err == nil || !strings.Contains(err.Error(), "approver groups (corp:sre)") {
		t.Errorf("approval by eve: %v", err)
	}
	got, err := runAs(t, bob, "request", "approve", name, "--comment", "go", "--server", url)
	if err != nil || !strings.Contains(got, "Request "+name+" is now approved until") {
		t.Fatalf("approve: %v %s", err, got)
	}
	if err := <-done; err != nil {
		t.Fatalf("create --wait: %v\n%s", err, out)
	}
	for _, want := range []string{"waiting for approval (1 needed)", "State:", "approved", "approved by", "bob", ": go", "left)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("create --wait output lacks %q:\n%s", want, out)
		}
	}

	got, err = runAs(t, alice, "grants", "--server", url)
	if err != nil || !strings.Contains(got, name) || !strings.Contains(got, "ClusterRole view") || !strings.Contains(got, "cli-grants") ||
		!(strings.Contains(got, "29m5") || strings.Contains(got, "30m0s")) {
		t.Errorf("grants: %v\n%s", err, got)
	}
	got, err = runAs(t, alice, "request", "list", "--server", url)
	if err != nil || !strings.Contains(got, "NAME") || !strings.Contains(got, name) || !strings.Contains(got, "1/1") ||
		!(strings.Contains(got, "in 29m5") || strings.Contains(got, "in 30m0s")) {
		t.Errorf("list: %v\n%s", err, got)
	}
	got, err = runAs(t, alice, "request", "show", name, "-o", "json", "--server", url)
	var shown struct {
		State     string `json:"state"`
		Ticket    string `json:"ticket"`
		Requester struct {
			User string `json:"user"`
		} `json:"requester"`
	}
	if err != nil || json.Unmarshal([]byte(got), &shown) != nil || shown.State != "ACCESS_REQUEST_STATE_APPROVED" ||
		shown.Ticket != "INC-7" || shown.Requester.User != "alice" {
		t.Errorf("show -o json: %v %+v\n%s", err, shown, got)
	}
	if _, err := runAs(t, bob, "request", "deny", name, "--server", url); err == nil || !strings.Contains(err.Error(), "already approved; to end it, revoke it") {
		t.Errorf("deny after approval: %v", err)
	}
	got, err = runAs(t, alice, "request", "revoke", name, "--server", url)
	if err != nil || !strings.Contains(got, "is now revoked") {
		t.Errorf("revoke: %v %s", err, got)
	}
	if got, err := runAs(t, alice, "grants", "--server", url); err != nil || !strings.Contains(got, "No grants in force.") {
		t.Errorf("grants after revoke: %v %s", err, got)
	}
}

func TestRequestWaitEndsWithAnErrorWhenDenied(t *testing.T) {
	url, users := accessGateway(t)
	alice, bob := users["alice"], users["bob"]
	if _, err := runAs(t, alice, "request", "create", "cli-view", "--for", "3h", "--reason", "x", "--server", url); err == nil ||
		!strings.Contains(err.Error(), "duration: 3h0m0s exceeds the elevation's maximum of 2h") {
		t.Errorf("too long: %v", err)
	}
	if _, err := runAs(t, alice, "request", "create", "cli-view", "--reason", "x", "--server", url); err == nil || !strings.Contains(err.Error(), "--for is required") {
		t.Errorf("no --for: %v", err)
	}
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- kaccess(ctx, alice, out, "request", "create", "cli-view", "--for", "10m", "--reason", "x",
			"--wait", "--poll-interval", "50ms", "--server", url)
	}()
	name := pendingFor(t, url, bob)
	if _, err := runAs(t, bob, "request", "deny", name, "--comment", "not now", "--server", url); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "access request "+name+" was denied") || !strings.Contains(out.String(), "not now") {
		t.Errorf("create --wait on a denied request: %v\n%s", err, out)
	}
}

// names returns the request names in a "kaccess request list" table, in order.
func names(t *testing.T, table string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// Without flags, "request list" shows what waits for the caller: the pending requests of others
// they may approve and have not reviewed, and their own; --mine, --pending and --all narrow
// or widen it.
func TestRequestListShowsWhatWaitsForTheCaller(t *testing.T) {
	url, users := accessGateway(t)
	alice, bob, dan, eve := users["alice"], users["bob"], users["dan"], users["eve"]
	create := func(who Store) string {
		t.Helper()
		out, err := runAs(t, who, "request", "create", "cli-view", "--for", "10m", "--reason", "list test", "-o", "json", "--server", url)
		var r struct {
			Name string `json:"name"`
		}
		if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Name == "" {
			t.Fatalf("create: %v %s", err, out)
		}
		return r.Name
	}
	forDan, forAlice := create(dan), create(alice)
	t.Cleanup(func() {
		// Later tests expect nothing pending for bob.
		_, _ = runAs(t, alice, "request", "revoke", forAlice, "--server", url)
		_, _ = runAs(t, dan, "request", "revoke", forDan, "--server", url)
	})
	list := func(who Store, flags ...string) []string {
		t.Helper()
		out, err := runAs(t, who, append([]string{"request", "list", "--server", url}, flags...)...)
		if err != nil {
			t.Fatalf("list %v: %v", flags, err)
		}
		if strings.TrimSpace(out) == "No access requests." {
			return nil
		}
		return names(t, out)
	}
	has := func(got []string, want ...string) bool {
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}

	// alice approves and requests: dan's request waits for her, and her own is there.
	if got := list(alice); !has(got, forAlice, forDan) {
		t.Errorf("alice's list: %v, want %s and %s", got, forAlice, forDan)
	}
	if got := list(bob); !has(got, forAlice, forDan) {
		t.Errorf("bob's list: %v, want both pending requests", got)
	}
	if got := list(dan); !slices.Equal(got, []string{forDan}) {
		t.Errorf("dan's list: %v, want only his own %s", got, forDan)
	}
	if got := list(eve); got != nil {
		t.Errorf("eve's list: %v, want none", got)
	}
	if got := list(alice, "--pending"); !has(got, forDan) || slices.Contains(got, forAlice) {
		t.Errorf("alice --pending: %v, want %s and not her own", got, forDan)
	}
	if got := list(alice, "--mine"); !has(got, forAlice) || slices.Contains(got, forDan) {
		t.Errorf("alice --mine: %v, want %s and not dan's", got, forDan)
	}

	// Once alice approved dan's request, it waits for nobody: gone from her list, in --all.
	if _, err := runAs(t, alice, "request", "approve", forDan, "--server", url); err != nil {
		t.Fatal(err)
	}
	if got := list(alice); slices.Contains(got, forDan) || !has(got, forAlice) {
		t.Errorf("alice's list after approving: %v, want %s without %s", got, forAlice, forDan)
	}
	if got := list(bob); slices.Contains(got, forDan) || !has(got, forAlice) {
		t.Errorf("bob's list after alice approved: %v, want %s without %s", got, forAlice, forDan)
	}
	if got := list(alice, "--all"); !has(got, forAlice, forDan) {
		t.Errorf("alice --all: %v, want both", got)
	}
	if _, err := runAs(t, alice, "request", "list", "--mine", "--all", "--server", url); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Errorf("--mine --all: %v", err)
	}
}
