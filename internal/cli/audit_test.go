package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

var cliAuditStart = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

// auditGateway serves AuditService over a chDB store of 200 events of alice, bob and sec, and
// returns its URL, a session store per user (sec is an auditor) and the events.
func auditGateway(t *testing.T) (string, map[string]Store, []*event.Event, *chdb.Store) {
	t.Helper()
	lib, helper := testenv.ChDB(t)
	ctx := context.Background()
	db, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	events := storetest.Realistic("gw-cli", 1, 200, cliAuditStart)
	for i, e := range events {
		e.User = []string{"alice", "bob", "sec", "bob"}[i%4]
	}
	events[5].UserAgent = "evil\x1b[31mred"
	if err := db.Write(ctx, "cli-audit", events); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
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
		TLS:        &tls.Config{Certificates: []tls.Certificate{cert}},
		AuditQuery: &query.Engine{Querier: db}, AuditorGroups: []string{"corp:security"},
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
	for user, groups := range map[string][]string{"alice": {"corp:devs"}, "bob": {"corp:devs"}, "sec": {"corp:security"}} {
		tok, claims, err := mgr.Mint(ctx, session.Claims{User: user, Groups: groups, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		st := Store{Dir: t.TempDir()}
		if err := st.Save(&Session{Server: url, Source: "test", Username: user, Token: tok, ExpiresAt: claims.ExpiresAt, CAData: caPEM}); err != nil {
			t.Fatal(err)
		}
		stores[user] = st
	}
	return url, stores, events, db
}

func runAudit(t *testing.T, store Store, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := runAuditTo(ctx, store, &out, args...)
	return out.String(), err
}

func runAuditTo(ctx context.Context, store Store, out io.Writer, args ...string) error {
	s := Streams{In: strings.NewReader(""), Out: out, Err: io.Discard}
	root := &cobra.Command{Use: "kaccess", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newAuditCommand(s, func() (Store, error) { return store, nil }))
	root.SetArgs(args)
	root.SetOut(out)
	return root.ExecuteContext(ctx)
}

func countUser(events []*event.Event, user string) int {
	n := 0
	for _, e := range events {
		if user == "" || e.User == user {
			n++
		}
	}
	return n
}

func TestAuditCommands(t *testing.T) {
	url, stores, events, _ := auditGateway(t)
	rng := []string{"--server", url, "--from", cliAuditStart.Format(time.RFC3339), "--to", cliAuditStart.Add(time.Hour).Format(time.RFC3339)}

	// alice, not an auditor, sees only her events, whatever her filter says.
	out, err := runAudit(t, stores["alice"], append([]string{"audit", "search", "-o", "csv", "--all", "--page-size", "7", "--filter", `user = "bob" OR user = "alice"`}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := countUser(events, "alice"); len(rows)-1 != want || rows[0][1] != "user" {
		t.Fatalf("alice's CSV: %d rows (header %v), want %d", len(rows)-1, rows[0], want)
	}
	for _, r := range rows[1:] {
		if r[1] != "alice" {
			t.Fatalf("alice sees a row of %s", r[1])
		}
	}

	// The auditor sees bob's events, as JSON lines.
	out, err = runAudit(t, stores["sec"], append([]string{"audit", "search", "-o", "json", "--all", "--filter", `user = "bob"`}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if want := countUser(events, "bob"); len(lines) != want {
		t.Errorf("auditor's search for bob: %d lines, want %d", len(lines), want)
	}
	var first struct{ User string }
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.User != "bob" {
		t.Errorf("first line %q: %v", lines[0], err)
	}

	// Without --all, one page and a table a person reads; control characters are not passed on.
	out, err = runAudit(t, stores["sec"], append([]string{"audit", "search", "--page-size", "10", "--oldest-first"}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out, "\n"); got != 11 || !strings.HasPrefix(out, "TIME") || strings.Contains(out, "\x1b") {
		t.Errorf("table of 10 events:\n%s", out)
	}

	// mine: the auditor's own events only.
	out, err = runAudit(t, stores["sec"], append([]string{"audit", "mine", "-o", "json", "--all"}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(out, "\n"), countUser(events, "sec"); got != want || strings.Contains(out, `"user":"bob"`) {
		t.Errorf("sec's own events: %d lines, want %d", got, want)
	}

	// export: CSV and JSON lines of the whole range.
	out, err = runAudit(t, stores["sec"], append([]string{"audit", "export", "-o", "csv"}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	rows, err = csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows)-1 != len(events) {
		t.Errorf("CSV export: %d rows, want %d (%v)", len(rows)-1, len(events), err)
	}
	out, err = runAudit(t, stores["bob"], append([]string{"audit", "export"}, rng...)...)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(out, "\n"), countUser(events, "bob"); got != want {
		t.Errorf("bob's JSON lines export: %d lines, want %d", got, want)
	}
	// Kubernetes audit events, asked for with --format (as the issue has it) or -o.
	for _, flag := range []string{"--format", "-o"} {
		out, err = runAudit(t, stores["bob"], append([]string{"audit", "export", flag, "k8s"}, rng...)...)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if want := countUser(events, "bob"); len(lines) != want {
			t.Errorf("bob's k8s export (%s): %d lines, want %d", flag, len(lines), want)
		}
		var ev struct {
			Kind, APIVersion string
			User             struct{ Username string }
		}
		if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Kind != "Event" || ev.APIVersion != "audit.k8s.io/v1" || ev.User.Username != "bob" {
			t.Errorf("k8s export (%s), first line %q: %v", flag, lines[0], err)
		}
	}
	if _, err := runAudit(t, stores["bob"], append([]string{"audit", "export", "--format", "k8s", "-o", "csv"}, rng...)...); err == nil || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("--format k8s -o csv: %v, want an error", err)
	}
	if _, err := runAudit(t, stores["bob"], append([]string{"audit", "export", "--format", "yaml"}, rng...)...); err == nil || !strings.Contains(err.Error(), `--format "yaml": want jsonl or csv or k8s`) {
		t.Errorf("--format yaml: %v, want the formats listed", err)
	}

	// A bad filter says where and what.
	_, err = runAudit(t, stores["sec"], append([]string{"audit", "search", "--filter", `verb = get`}, rng...)...)
	if err == nil || !strings.Contains(err.Error(), "1:8") {
		t.Errorf("bad filter: %v, want its position", err)
	}
	// Detections are for auditors.
	if _, err := runAudit(t, stores["alice"], append([]string{"audit", "detect"}, rng...)...); err == nil {
		t.Error("alice ran detections")
	}
	if _, err := runAudit(t, stores["alice"], "audit", "search", "--server", url, "--from", "yesterday"); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("bad --from: %v", err)
	}
}

// tail prints new events of the caller as they are written and stops cleanly when its context
// ends (Ctrl-C).
func TestAuditTail(t *testing.T) {
	url, stores, _, db := auditGateway(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- runAuditTo(ctx, stores["bob"], out, "audit", "tail", "--server", url, "-o", "json") }()
	time.Sleep(300 * time.Millisecond)
	fresh := storetest.Realistic("gw-cli-tail", 1, 8, time.Now())
	for i, e := range fresh {
		e.User = []string{"bob", "alice"}[i%2]
	}
	if err := db.Write(context.Background(), "cli-tail", fresh); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(out.String(), "\n") < 4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail ended with %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("bob's tail printed %d lines, want his 4 new events:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, `"user":"bob"`) {
			t.Errorf("line %s is not bob's", l)
		}
	}
}
