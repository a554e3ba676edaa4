package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, testenv.WithCluster(), testenv.WithAD(), testenv.WithOIDC(), testenv.WithClickHouse()))
}

// testGateway is a gateway serving in front of the shared test cluster.
type testGateway struct {
	*Gateway
	URL    string
	OpsURL string
	logs   *lockedWriter
	stop   func()
}

// unreachableStore is an audit store that never answers: records stay in the spool.
func unreachableStore(ctx context.Context) (ship.Sink, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// startGateway serves a gateway for the test's lifetime. mutate may change its config.
func startGateway(t testing.TB, mutate func(*config.Config), opts ...Option) *testGateway {
	t.Helper()
	c := testenv.Shared(t)
	cfg := &config.Config{
		Listen:   config.Listen{Address: "127.0.0.1:0", OpsAddress: "127.0.0.1:0"},
		StateDir: t.TempDir(),
		Clusters: []config.Cluster{{Name: "test", Server: c.URL, CAFile: c.CAFile, TokenFile: c.GatewayTokenFile}},
		Log:      config.Log{Level: "debug"},
	}
	if mutate != nil {
		mutate(cfg)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &lockedWriter{w: &bytes.Buffer{}}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	// Tests about the audit store pass their own; elsewhere records stay in the (real) spool.
	opts = append([]Option{WithAuditStore(unreachableStore)}, opts...)
	g, err := New(cfg, slog.New(WithRequestIDs(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tg := &testGateway{Gateway: g, URL: "https://" + g.Addr(), OpsURL: "http://" + g.OpsAddr(), logs: logs}
	var once sync.Once
	tg.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		tg.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	return tg
}

// mint returns a session token for user in groups.
func (g *testGateway) mint(t testing.TB, user string, groups ...string) string {
	t.Helper()
	token, _, err := g.Sessions().Mint(context.Background(), session.Claims{User: user, UID: "uid-" + user, Groups: groups, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func (g *testGateway) restConfig(token string) *rest.Config {
	return &rest.Config{Host: g.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: g.CAPEM}}
}

func (g *testGateway) client(t *testing.T, token string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(g.restConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// httpClient trusts the gateway's CA, for requests kubectl would never send.
func (g *testGateway) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(g.CAPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// kubeconfig writes a kubeconfig for kubectl that reaches the cluster through the gateway.
func (g *testGateway) kubeconfig(t *testing.T, user, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["gw"] = &clientcmdapi.Cluster{Server: g.URL, CertificateAuthorityData: g.CAPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["gw"] = &clientcmdapi.Context{Cluster: "gw", AuthInfo: user}
	kc.CurrentContext = "gw"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs the real kubectl and returns its output and error output.
func kubectl(t *testing.T, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir())
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func mustKubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	out, errOut, err := kubectl(t, kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, errOut)
	}
	return out
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lockedWriter lets the gateway's goroutines log into one buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.w)
}

// expiredToken is signed with the gateway's own keys, by a clock a day behind.
func expiredToken(t *testing.T, g *testGateway) string {
	t.Helper()
	past := clocktesting.NewFakePassiveClock(time.Now().Add(-24 * time.Hour))
	m, err := session.NewManager(session.Config{Issuer: g.cfg.Session.Issuer, KeysDir: g.cfg.Session.KeysDir, TTL: time.Minute, Clock: past})
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := m.Mint(context.Background(), session.Claims{User: "frank"})
	if err != nil {
		t.Fatal(err)
	}
	return token
}
