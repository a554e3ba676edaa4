package gateway

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/authn/oidc"
	"github.com/kaccess/kaccess/internal/cli"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// withIdP configures the shared OpenID provider as the login source "idp".
func withIdP(p *testenv.OIDCProvider) func(*config.Config) {
	return func(c *config.Config) {
		c.OIDC = []oidc.Config{{Name: "idp", IssuerURL: p.Issuer, ClientIDs: []string{testenv.OIDCClientID}, CAFile: p.CAFile}}
	}
}

var loginURL = regexp.MustCompile(`https://\S+\?\S*client_id=\S+`)

// A person logs in with `kaccess login` at a real OpenID provider (the browser step played by
// HTTP requests), kubectl works with the groups of the ID token, the session renews silently
// from the refresh token, and ID tokens are accepted on the proxy as they are; a key rotated at
// the provider is picked up without a restart.
func TestOIDCLoginThroughGateway(t *testing.T) {
	c, idp := testenv.Shared(t), testenv.SharedOIDC(t)
	c.MustNamespace(t, "oidc-e2e")
	c.MustGrantRole(t, "oidc-e2e", "devs-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.Group("idp:developers"))
	g := startGateway(t, withIdP(idp))
	e := newCLIEnv(t, g)

	e.loginAnswering("--oidc", loginURL, func(ctx context.Context, url string) error {
		_, err := idp.Authorize(ctx, url, idp.User)
		return err
	}, "--no-browser", "--issuer-ca-file", idp.CAFile)
	if _, errOut, err := e.run("", "kubeconfig", "--server", g.URL, "--kubeconfig", e.kube, "--namespace", "oidc-e2e"); err != nil {
		t.Fatalf("kubeconfig: %v %s", err, errOut)
	}
	if _, errOut, err := e.kubectl("get", "configmaps"); err != nil {
		t.Fatalf("kubectl with the OIDC session (RoleBinding to idp:developers): %v %s", err, errOut)
	}
	if _, errOut, err := e.kubectl("get", "configmaps", "-n", "default"); err == nil || !strings.Contains(errOut, "cannot list") {
		t.Fatalf("kubectl outside the group's Role: %v %s", err, errOut)
	}

	// The session ran out: kubectl, with no terminal, renews it from the refresh token.
	store := cli.Store{Dir: filepath.Join(e.home, "sessions")}
	sess, err := store.Load(g.URL)
	if err != nil || sess.RefreshToken == "" {
		t.Fatalf("no refresh token kept: %v", err)
	}
	old := sess.Token
	sess.ExpiresAt = time.Now().Add(-time.Minute)
	if err := store.Save(sess); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := e.kubectl("get", "configmaps"); err != nil {
		t.Fatalf("kubectl after the session expired: %v %s", err, errOut)
	}
	if renewed, _ := store.Load(g.URL); renewed == nil || renewed.Token == old || !renewed.ExpiresAt.After(time.Now()) {
		t.Fatal("the session was not renewed silently")
	}

	// An ID token straight from the provider works on the proxy; one for another client does not.
	ctx := context.Background()
	toks, err := idp.Login(ctx, idp.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	path := g.URL + "/api/v1/namespaces/oidc-e2e/configmaps"
	if code, body := get(t, g.httpClient(), path, toks.IDToken); code != 200 {
		t.Fatalf("ID token on the proxy: %d %s", code, body)
	}
	other, err := idp.Login(ctx, idp.User, testenv.OIDCOtherClientID)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, g.httpClient(), path, other.IDToken); code != 401 {
		t.Fatalf("ID token for another client: %d %s", code, body)
	}
	// Keys rotated at the provider: a token signed with the new key is accepted, no restart.
	if _, err := idp.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	rotated, err := idp.Login(ctx, idp.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, g.httpClient(), path, rotated.IDToken); code != 200 {
		t.Fatalf("ID token signed with the rotated key: %d %s", code, body)
	}
	// ExchangeToken refuses a token of another client with a clear message.
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/auth:exchangeToken",
		strings.NewReader(`{"source":"idp","id_token":"`+other.IDToken+`"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || strings.Contains(string(body), other.IDToken) {
		t.Fatalf("exchange of a token for another client: %d %s", resp.StatusCode, body)
	}
}

// An IdP that goes down: sessions already exchanged keep working until they expire, and a new
// exchange gets a clear "unavailable" instead of a refusal.
func TestOIDCProviderDown(t *testing.T) {
	ctx := context.Background()
	idp, err := testenv.StartOIDCProvider(ctx, testenv.OIDCProviderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Stop()
	g := startGateway(t, withIdP(idp))
	toks, err := idp.Login(ctx, idp.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(idToken string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/v1/auth:exchangeToken",
			strings.NewReader(`{"source":"idp","id_token":"`+idToken+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := g.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := exchange(toks.IDToken)
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, body)
	}
	session := regexp.MustCompile(`"token":"([^"]+)"`).FindStringSubmatch(body)[1]
	// A second login's ID token, not seen by the gateway yet, carries a key id it knows.
	fresh, err := idp.Login(ctx, idp.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idp.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	unknownKey, err := idp.Login(ctx, idp.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.Stop(); err != nil {
		t.Fatal(err)
	}
	path := g.URL + "/api/v1/namespaces/default/configmaps"
	if code, body := get(t, g.httpClient(), path, session); code == 401 {
		t.Fatalf("the gateway session stopped working when the IdP went down: %s", body)
	}
	if code, body := exchange(fresh.IDToken); code != 200 {
		t.Fatalf("an ID token signed with a key the gateway already has: %d %s", code, body)
	}
	if code, body := exchange(unknownKey.IDToken); code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be reached") {
		t.Fatalf("an ID token needing the IdP's new keys while it is down: %d %s", code, body)
	}
}

var deviceCode = regexp.MustCompile(`\(code ([A-Za-z0-9-]+)\)`)

// kaccess login --device: the person approves the code on another device; kaccess polls and
// gets a session.
func TestOIDCDeviceLogin(t *testing.T) {
	idp := testenv.SharedOIDC(t)
	g := startGateway(t, withIdP(idp))
	e := newCLIEnv(t, g)
	e.loginAnswering("--device", deviceCode, func(ctx context.Context, code string) error {
		return idp.ApproveDevice(ctx, code, idp.User)
	}, "--device", "--issuer-ca-file", idp.CAFile)
	if out, _, err := e.run("", "whoami", "--server", g.URL); err != nil || !strings.Contains(out, "idp:developers") {
		t.Fatalf("whoami after device login: %v %s", err, out)
	}
}

// loginAnswering runs `kaccess login --oidc ...` and answers the prompt it prints on stderr the
// way a person would elsewhere (a browser, a second device): when a line matches prompt, answer
// gets the last submatch (or the whole match). kaccess must then log in.
func (e *cliEnv) loginAnswering(what string, prompt *regexp.Regexp, answer func(ctx context.Context, match string) error, extra ...string) {
	t := e.t
	t.Helper()
	cmd := exec.Command(kaccessBinary(t), append([]string{"login", "--server", e.g.URL, "--ca-file", e.caFile, "--oidc"}, extra...)...)
	cmd.Env = append(os.Environ(), "KACCESS_HOME="+e.home)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	matches := make(chan string, 1)
	var mu sync.Mutex
	var printed strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			printed.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := prompt.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case matches <- m[len(m)-1]:
				default:
				}
			}
		}
	}()
	screen := func() string { mu.Lock(); defer mu.Unlock(); return printed.String() }
	select {
	case m := <-matches:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := answer(ctx, m); err != nil {
			t.Fatalf("%s: answering %q: %v", what, m, err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%s: kaccess printed nothing to answer:\n%s", what, screen())
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(stdout.String(), "Logged in") {
		t.Fatalf("kaccess login %s: %v\n%s\n%s", what, err, stdout.String(), screen())
	}
}
