package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

func get(t *testing.T, client *http.Client, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp.Body)
}

// /readyz follows the upstream; /metrics counts requests by verb, resource and code, and
// authentication outcomes; each response carries a request id the log also has.
func TestOpsEndpoints(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "ops")
	c.MustGrantRole(t, "ops", "ops-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("olga"))
	g := startGateway(t, nil)
	waitFor(t, func() bool { code, _ := get(t, http.DefaultClient, g.OpsURL+"/readyz", ""); return code == 200 })
	if code, _ := get(t, http.DefaultClient, g.OpsURL+"/healthz", ""); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	token := g.mint(t, "olga")
	if code, _ := get(t, g.httpClient(), g.URL+"/api/v1/namespaces/ops/configmaps", token); code != 200 {
		t.Fatalf("list: %d", code)
	}
	if code, _ := get(t, g.httpClient(), g.URL+"/api/v1/namespaces/kube-system/configmaps", token); code != 403 {
		t.Fatalf("list kube-system: %d", code)
	}
	get(t, g.httpClient(), g.URL+"/api/v1/namespaces/ops/configmaps", "garbage")

	_, metrics := get(t, http.DefaultClient, g.OpsURL+"/metrics", "")
	for _, want := range []string{
		`kaccess_requests_total{cluster="test",code="200",resource="configmaps",verb="list"} 1`,
		`kaccess_requests_total{cluster="test",code="403",resource="configmaps",verb="list"} 1`,
		`kaccess_requests_total{cluster="test",code="401",resource="configmaps",verb="list"} 1`,
		`kaccess_authentication_attempts_total{result="success",source="test"} 2`,
		`kaccess_authentication_attempts_total{result="unrecognized",source=""} 1`,
		`kaccess_request_duration_seconds_count{cluster="test",resource="configmaps",verb="list"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The request id goes back to the client and is the API server's audit ID.
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/namespaces/ops/configmaps", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Audit-ID", "client-chosen")
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if id == "" || resp.Header.Get("Audit-Id") != id {
		t.Fatalf("X-Request-Id %q, API server Audit-Id %q: want the same id", id, resp.Header.Get("Audit-Id"))
	}
	if !strings.Contains(g.logs.String(), `"request_id":"`+id+`"`) {
		t.Errorf("request id %s not in the log", id)
	}
}

// An API server that cannot be reached makes the gateway unready and gives clients a clear 502,
// never a request sent anywhere else.
func TestUpstreamDown(t *testing.T) {
	c := testenv.Shared(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Clusters = []config.Cluster{{Name: "gone", Server: dead, CAFile: c.CAFile, TokenFile: c.GatewayTokenFile}}
	})
	waitFor(t, func() bool {
		code, body := get(t, http.DefaultClient, g.OpsURL+"/readyz", "")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "cluster gone: unreachable")
	})
	code, body := get(t, g.httpClient(), g.URL+"/api/v1/namespaces", g.mint(t, "olga"))
	if code != http.StatusBadGateway || !strings.Contains(body, `could not reach the API server of cluster \"gone\"`) {
		t.Fatalf("%d %s", code, body)
	}
	_, metrics := get(t, http.DefaultClient, g.OpsURL+"/metrics", "")
	if !strings.Contains(metrics, `kaccess_upstream_errors_total{cluster="gone",kind="unreachable"} 1`) {
		t.Errorf("upstream error not counted:\n%s", metrics)
	}
}

// Each cluster is served under /clusters/<name>/, the default one also at /.
func TestClusterRouting(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "routing")
	c.MustGrantRole(t, "routing", "rita-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("rita"))
	kubeconfig := filepath.Join(t.TempDir(), "gateway.kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, testenv.GatewayUser, c.GatewayToken); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: "second", Kubeconfig: kubeconfig, Default: false})
	})
	token := g.mint(t, "rita")
	for _, path := range []string{"/api/v1/namespaces/routing/configmaps", "/clusters/test/api/v1/namespaces/routing/configmaps", "/clusters/second/api/v1/namespaces/routing/configmaps"} {
		if code, body := get(t, g.httpClient(), g.URL+path, token); code != 200 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, body := get(t, g.httpClient(), g.URL+"/clusters/nope/api/v1/namespaces/routing/configmaps", token); code != 404 || !strings.Contains(body, `no cluster named \"nope\"`) {
		t.Errorf("unknown cluster: %d %s", code, body)
	}
	// kubectl works with a cluster path in its server URL.
	kc := g.kubeconfig(t, "rita", token)
	data, _ := os.ReadFile(kc)
	if err := os.WriteFile(kc, []byte(strings.Replace(string(data), g.URL, g.URL+"/clusters/second", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, kc, "get", "configmaps", "-n", "routing")
}

// Oversized bodies are refused with 413 before reaching the API server, whether the size is
// declared or the body is streamed.
func TestBodyLimit(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "limits")
	c.MustGrantRole(t, "limits", "lena-write", []rbacv1.PolicyRule{readConfigMaps, writeConfigMaps}, testenv.User("lena"))
	g := startGateway(t, func(cfg *config.Config) { cfg.Limits.MaxBodyBytes = 4096 })
	token := g.mint(t, "lena")
	big := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":"` + strings.Repeat("x", 8192) + `"}}`
	// Declared with Content-Length: refused before anything is sent upstream.
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/namespaces/limits/configmaps", strings.NewReader(big))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg := readAll(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "limit of 4096 bytes") {
		t.Errorf("declared: %d %s", resp.StatusCode, msg)
	}
	// Streamed (no Content-Length): cut at the limit.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(big))
		pw.Close()
	}()
	req, _ = http.NewRequest(http.MethodPost, g.URL+"/api/v1/namespaces/limits/configmaps", pr)
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err = g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg = readAll(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("streamed: %d %s", resp.StatusCode, msg)
	}
	if _, err := c.AdminClient().CoreV1().ConfigMaps("limits").Get(context.Background(), "big", metav1.GetOptions{}); err == nil {
		t.Fatal("the oversized ConfigMap was created")
	}
}

// Shutdown drains: readiness turns 503, an in-flight watch is ended, and Run returns in time.
func TestGracefulShutdownEndsStreams(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "drain")
	c.MustGrantRole(t, "drain", "dora-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("dora"))
	g := startGateway(t, func(cfg *config.Config) { cfg.Timeouts.ShutdownDrain = config.Duration(time.Second) })
	w, err := g.client(t, g.mint(t, "dora")).CoreV1().ConfigMaps("drain").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	g.stop()
	g.stop = func() {}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("shutdown took %v with drain 1s", took)
	}
	select {
	case _, open := <-w.ResultChan():
		if open {
			// Drain any event; the channel must close next.
			if _, open = <-w.ResultChan(); open {
				t.Fatal("watch still open after shutdown")
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch not ended by shutdown")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("condition not met within 15s")
}

// Headers over limits.maxHeaderBytes get 431 and never reach authentication.
func TestHeaderLimit(t *testing.T) {
	g := startGateway(t, func(cfg *config.Config) { cfg.Limits.MaxHeaderBytes = 8 << 10 })
	h1 := g.httpClient()
	tr := h1.Transport.(*http.Transport)
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/namespaces", nil)
	req.Header.Set("Authorization", "Bearer "+g.mint(t, "hank"))
	req.Header.Set("X-Padding", strings.Repeat("a", 64<<10))
	resp, err := h1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}
