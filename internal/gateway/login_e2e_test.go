package gateway

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/cli"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

var (
	buildOnce   sync.Once
	kaccessPath string
	buildErr    error
)

// kaccessBinary builds cmd/kaccess once per test binary: kubectl runs it as its credential plugin.
func kaccessBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kaccess-bin-")
		if err != nil {
			buildErr = err
			return
		}
		kaccessPath = filepath.Join(dir, "kaccess")
		out, err := exec.Command("go", "build", "-o", kaccessPath, "github.com/kaccess/kaccess/cmd/kaccess").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build kaccess: %v", buildErr)
	}
	return kaccessPath
}

// passwords is a login source of fixed accounts, standing in for a directory (the directory
// sources have their own tests against real Samba AD and OpenLDAP).
func passwords(accounts map[string]string, groups map[string][]string) apiserver.Source {
	return apiserver.Source{Type: "ldap", Passwords: authn.PasswordFunc(func(_ context.Context, user, password string) (*authn.Identity, error) {
		if want, ok := accounts[user]; !ok || want != password {
			return nil, authn.ErrInvalidCredentials
		}
		return &authn.Identity{User: user, UID: "uid-" + user, Groups: groups[user]}, nil
	})}
}

type cliEnv struct {
	t          *testing.T
	g          *testGateway
	home, kube string
	caFile     string
}

func (e *cliEnv) run(stdin string, args ...string) (string, string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kaccessBinary(e.t), args...)
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// kubectl through the kubeconfig kaccess wrote; kaccess is found on PATH like a person's install.
func (e *cliEnv) kubectl(args ...string) (string, string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", e.kube}, args...)...)
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home, "KUBECACHEDIR="+e.t.TempDir())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func newCLIEnv(t *testing.T, g *testGateway) *cliEnv {
	dir := t.TempDir()
	e := &cliEnv{t: t, g: g, home: filepath.Join(dir, "home"), kube: filepath.Join(dir, "kubeconfig"), caFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(e.caFile, g.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// A person logs in with kaccess, writes a kubeconfig, and kubectl works through the gateway with
// the groups the source says; logout makes the token fail at once.
func TestLoginKubeconfigKubectlLogout(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "login-e2e")
	c.MustGrantRole(t, "login-e2e", "team-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.Group("corp:team"))
	g := startGateway(t, nil, WithPasswordSource("corp", passwords(map[string]string{"alice": "s3cret!"}, map[string][]string{"alice": {"corp:team"}})))
	e := newCLIEnv(t, g)

	_, errOut, err := e.run("wrong\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "alice", "--password-stdin")
	if err == nil || !strings.Contains(errOut, "invalid username or password") {
		t.Fatalf("wrong password: %v %q", err, errOut)
	}
	out, errOut, err := e.run("s3cret!\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "alice", "--password-stdin")
	if err != nil || !strings.Contains(out, "Logged in to "+g.URL+" as alice (source corp)") {
		t.Fatalf("login: %v %q %q", err, out, errOut)
	}
	if out, errOut, err = e.run("", "kubeconfig", "--server", g.URL, "--kubeconfig", e.kube, "--namespace", "login-e2e"); err != nil || !strings.Contains(out, "Wrote context") {
		t.Fatalf("kubeconfig: %v %s %s", err, out, errOut)
	}
	// kubectl runs `kaccess credential`: the kubeconfig names this very binary.
	if _, errOut, err := e.kubectl("get", "configmaps"); err != nil {
		t.Fatalf("kubectl get configmaps through kaccess credential: %v\n%s", err, errOut)
	}
	if _, errOut, err := e.kubectl("get", "configmaps", "-n", "default"); err == nil || !strings.Contains(errOut, `User "alice" cannot list`) {
		t.Fatalf("outside her role: %v %s", err, errOut)
	}
	if out, _, err := e.run("", "whoami", "--server", g.URL); err != nil || !strings.Contains(out, "corp:team") || !strings.Contains(out, "User:    alice") {
		t.Fatalf("whoami: %v %s", err, out)
	}
	// Keep the token to show it dies with the logout, not just the local file.
	kept, err := cli.Store{Dir: filepath.Join(e.home, "sessions")}.Load(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	st := kept.Token
	if out, errOut, err := e.run("", "logout", "--server", g.URL); err != nil || !strings.Contains(out, "Logged out") {
		t.Fatalf("logout: %v %s %s", err, out, errOut)
	}
	if code, body := get(t, g.httpClient(), g.URL+"/api/v1/namespaces/login-e2e/configmaps", st); code != 401 || !strings.Contains(body, "session was ended") {
		t.Fatalf("token after logout: %d %s", code, body)
	}
	if _, errOut, err := e.kubectl("get", "configmaps"); err == nil || !strings.Contains(errOut, "kaccess login --server "+g.URL) {
		t.Fatalf("kubectl after logout must say what to run: %v %s", err, errOut)
	}
}

// terminal runs a command on a pty and lets a test wait for what a person would see.
type terminal struct {
	t      *testing.T
	cmd    *exec.Cmd
	tty    *os.File
	mu     sync.Mutex
	screen bytes.Buffer
	done   chan struct{}
}

func startTerminal(t *testing.T, cmd *exec.Cmd) *terminal {
	t.Helper()
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{t: t, cmd: cmd, tty: tty, done: make(chan struct{})}
	go func() {
		defer close(term.done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			term.mu.Lock()
			term.screen.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { tty.Close() })
	return term
}

func (term *terminal) text() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.screen.String()
}

// expect waits until want is on the screen.
func (term *terminal) expect(want string) {
	term.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(term.text(), want) {
		if time.Now().After(deadline) {
			term.t.Fatalf("no %q on the terminal:\n%s", want, term.text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (term *terminal) typeLine(s string) { _, _ = term.tty.Write([]byte(s + "\n")) }

// wait waits for the command to end and for its last output.
func (term *terminal) wait() error {
	err := term.cmd.Wait()
	select {
	case <-term.done:
	case <-time.After(5 * time.Second):
	}
	return err
}

// The password prompt works the way a person meets it: at a terminal, without echo.
func TestLoginPromptsAtATerminal(t *testing.T) {
	g := startGateway(t, nil, WithPasswordSource("corp", passwords(map[string]string{"bob": "hunter2"}, nil)))
	e := newCLIEnv(t, g)
	cmd := exec.Command(kaccessBinary(t), "login", "--server", g.URL, "--ca-file", e.caFile)
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home)
	term := startTerminal(t, cmd)
	term.expect("Username:")
	term.typeLine("bob")
	term.expect("Password for bob (corp):")
	term.typeLine("hunter2")
	if err := term.wait(); err != nil {
		t.Fatalf("kaccess login: %v; screen:\n%s", err, term.text())
	}
	if strings.Contains(term.text(), "hunter2") {
		t.Fatalf("the password was echoed:\n%s", term.text())
	}
	if !strings.Contains(term.text(), "Logged in to") {
		t.Fatalf("screen:\n%s", term.text())
	}
}

// When the session has expired, kubectl at a terminal has kaccess ask for the password again
// and then carries on with the command.
func TestKubectlAtATerminalRenewsAnExpiredSession(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "relogin")
	c.MustGrantRole(t, "relogin", "team-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.Group("corp:team"))
	g := startGateway(t, nil, WithPasswordSource("corp", passwords(map[string]string{"alice": "s3cret!"}, map[string][]string{"alice": {"corp:team"}})))
	e := newCLIEnv(t, g)
	if _, errOut, err := e.run("s3cret!\n", "login", "--server", g.URL, "--ca-file", e.caFile, "--username", "alice", "--password-stdin"); err != nil {
		t.Fatalf("login: %v %s", err, errOut)
	}
	if _, errOut, err := e.run("", "kubeconfig", "--server", g.URL, "--kubeconfig", e.kube, "--namespace", "relogin"); err != nil {
		t.Fatalf("kubeconfig: %v %s", err, errOut)
	}
	store := cli.Store{Dir: filepath.Join(e.home, "sessions")}
	sess, err := store.Load(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	oldToken := sess.Token
	sess.ExpiresAt = time.Now().Add(-time.Minute)
	if err := store.Save(sess); err != nil {
		t.Fatal(err)
	}
	// Without a terminal kubectl fails and says what to run.
	if _, errOut, err := e.kubectl("get", "configmaps"); err == nil || !strings.Contains(errOut, "kaccess login --server "+g.URL) {
		t.Fatalf("non-interactive kubectl with an expired session: %v %s", err, errOut)
	}
	cmd := exec.Command("kubectl", "--kubeconfig", e.kube, "get", "configmaps", "-o", "name")
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home, "KUBECACHEDIR="+t.TempDir())
	term := startTerminal(t, cmd)
	term.expect("Password for alice (corp):")
	term.typeLine("s3cret!")
	if err := term.wait(); err != nil {
		t.Fatalf("kubectl after relogin: %v\n%s", err, term.text())
	}
	if strings.Contains(term.text(), "s3cret!") || strings.Contains(term.text(), "error") {
		t.Fatalf("terminal:\n%s", term.text())
	}
	renewed, err := store.Load(g.URL)
	if err != nil || renewed.Token == oldToken || !renewed.ExpiresAt.After(time.Now()) {
		t.Fatalf("session not renewed: %v", err)
	}
}

// Two replicas share signing keys and the revocations ConfigMap: a logout at one ends the
// session at the other.
func TestLogoutReachesOtherReplicas(t *testing.T) {
	keys := t.TempDir()
	shared := func(cfg *config.Config) {
		cfg.Session.KeysDir = keys
		cfg.Session.Revocations = "kaccess-system/kaccess-revocations"
	}
	g1, g2 := startGateway(t, shared), startGateway(t, shared)
	token := g1.mint(t, "rosa")
	path := "/api/v1/namespaces/default/configmaps"
	if code, body := get(t, g2.httpClient(), g2.URL+path, token); code != 403 {
		t.Fatalf("replica 2 before logout: %d %s (want the API server's 403 for rosa)", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, g1.URL+"/v1/auth:logout", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g1.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("logout at replica 1: %d", resp.StatusCode)
	}
	waitFor(t, func() bool { code, _ := get(t, g2.httpClient(), g2.URL+path, token); return code == 401 })
}

// A kubeconfig handed out by an operator pins the gateway's CA; kaccess login uses it, so a
// person needs no --ca-file.
func TestLoginTakesTheCAFromTheKubeconfig(t *testing.T) {
	g := startGateway(t, nil, WithPasswordSource("corp", passwords(map[string]string{"ines": "pw-ines"}, nil)))
	e := newCLIEnv(t, g)
	// Write the kubeconfig first (the CA given once), then log in without --ca-file.
	if _, errOut, err := e.run("", "kubeconfig", "--server", g.URL, "--ca-file", e.caFile, "--kubeconfig", e.kube); err != nil {
		t.Fatalf("kubeconfig: %v %s", err, errOut)
	}
	cmd := exec.Command(kaccessBinary(t), "login", "--server", g.URL, "--username", "ines", "--password-stdin")
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home, "KUBECONFIG="+e.kube)
	cmd.Stdin = strings.NewReader("pw-ines\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Logged in") {
		t.Fatalf("login with the CA from the kubeconfig: %v %s", err, out)
	}
	// Without it, the gateway's self-signed certificate is refused.
	other := newCLIEnv(t, g)
	if _, errOut, err := other.run("pw-ines\n", "login", "--server", g.URL, "--username", "ines", "--password-stdin"); err == nil || !strings.Contains(errOut, "ca-file") {
		t.Fatalf("login with no CA anywhere: %v %s", err, errOut)
	}
}
