package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

// zeroLossRig runs the gateway binary as a process in front of the test cluster, with the
// ClickHouse server as its audit store, so the test can stop the store and kill -9 the gateway.
type zeroLossRig struct {
	t                 *testing.T
	dir, bin, cfgPath string
	url, opsURL       string
	gw                *testenv.Child
	client            *http.Client
	token             string
}

func newZeroLossRig(t *testing.T, db string) *zeroLossRig {
	c := testenv.Shared(t)
	ch := testenv.SharedClickHouse(t)
	dir := t.TempDir()
	r := &zeroLossRig{t: t, dir: dir, bin: testenv.BuildBinary(t, "cmd/gateway", dir)}
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS " + db, fmt.Sprintf(testenv.LegacyAuditTableDDL, db+".audit_events")} {
		if _, err := ch.Query(q); err != nil {
			t.Fatal(err)
		}
	}
	pwFile := filepath.Join(dir, "clickhouse-password")
	if err := os.WriteFile(pwFile, []byte(ch.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := testenv.FreePorts(t, 2)
	r.url, r.opsURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	state := filepath.Join(dir, "state")
	cfg := fmt.Sprintf(`listen: {address: "127.0.0.1:%d", opsAddress: "127.0.0.1:%d"}
stateDir: %s
clusters: [{name: test, server: %q, caFile: %q, tokenFile: %q}]
log: {level: info}
audit:
  batch: {flushInterval: 200ms}
  clickhouse: {addresses: [%q], database: %s, username: %s, passwordFile: %q}
`, ports[0], ports[1], state, c.URL, c.CAFile, c.GatewayTokenFile, ch.Addr, db, ch.User, pwFile)
	r.cfgPath = filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	ca, err := os.ReadFile(filepath.Join(state, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	r.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}
	keys, err := session.NewManager(session.Config{Issuer: "kaccess", KeysDir: filepath.Join(state, "session-keys"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.token, _, err = keys.Mint(context.Background(), session.Claims{User: "zl-user", Groups: []string{"zl:readers"}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs the gateway binary and waits until it is ready.
func (r *zeroLossRig) start() {
	r.t.Helper()
	r.gw = testenv.StartChild(r.t, "gateway", r.dir, r.bin, "serve", "--config", r.cfgPath)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.opsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if r.gw.Exited() || time.Now().After(deadline) {
			r.t.Fatalf("gateway not ready: %v\n%s", err, r.gw.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load sends GETs from n clients until stop is closed and returns the request ids of every
// response a client received in full.
func (r *zeroLossRig) load(n int, path string, stop <-chan struct{}, during func() string) (ids map[string]string, errs int64) {
	var mu sync.Mutex
	ids = map[string]string{}
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", r.url+path, nil)
				req.Header.Set("Authorization", "Bearer "+r.token)
				resp, err := r.client.Do(req)
				if err != nil {
					failed.Add(1) // the gateway is down (killed): nothing was answered
					time.Sleep(20 * time.Millisecond)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					failed.Add(1) // cut off: not a response the client got
					continue
				}
				phase := during()
				mu.Lock()
				ids[resp.Header.Get("X-Request-Id")] = fmt.Sprintf("%d %s", resp.StatusCode, phase)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids, failed.Load()
}

// Every request that got a response is in the store exactly once, through a ClickHouse outage
// and a kill -9 of the gateway under load.
func TestAuditLosesNothingThroughOutageAndCrash(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "zero-loss")
	c.MustGrantRole(t, "zero-loss", "cm-reader", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"},
	}}, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "zl:readers"})
	ch := testenv.SharedClickHouse(t)
	r := newZeroLossRig(t, "zeroloss")

	var phase atomic.Value
	phase.Store("steady")
	stop := make(chan struct{})
	type result struct {
		ids  map[string]string
		errs int64
	}
	done := make(chan result, 1)
	go func() {
		ids, errs := r.load(4, "/api/v1/namespaces/zero-loss/configmaps", stop, func() string { return phase.Load().(string) })
		done <- result{ids, errs}
	}()
	time.Sleep(1500 * time.Millisecond)
	phase.Store("store-down")
	if err := ch.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := ch.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	phase.Store("store-back")
	time.Sleep(1500 * time.Millisecond)
	phase.Store("after-kill")
	if err := r.gw.Kill(); err != nil {
		t.Fatal(err)
	}
	r.start()
	time.Sleep(2 * time.Second)
	close(stop)
	res := <-done

	byPhase := map[string]int{}
	for _, v := range res.ids {
		_, p, _ := strings.Cut(v, " ")
		byPhase[p]++
		if !strings.HasPrefix(v, "200 ") {
			t.Errorf("a response was %s", v)
		}
	}
	if byPhase["store-down"] == 0 || byPhase["after-kill"] == 0 {
		t.Fatalf("responses by phase %v: the gateway must keep serving while the store is down and after a restart", byPhase)
	}

	// Wait until the store has caught up, then compare.
	query := func(q string) []string {
		out, err := ch.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(out)
	}
	var stored map[string]int
	deadline := time.Now().Add(60 * time.Second)
	for {
		stored = map[string]int{}
		rows := query("SELECT request_id, count() FROM zeroloss.audit_events WHERE kind = 'request' GROUP BY request_id FORMAT TSV")
		for i := 0; i+1 < len(rows); i += 2 {
			var n int
			fmt.Sscan(rows[i+1], &n)
			stored[rows[i]] = n
		}
		missing := 0
		for id := range res.ids {
			if stored[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d answered requests are not in the store after 60 s", missing, len(res.ids))
		}
		time.Sleep(250 * time.Millisecond)
	}
	for id := range res.ids {
		if stored[id] != 1 {
			t.Errorf("request %s stored %d times", id, stored[id])
		}
	}
	// No duplicates at all, and no gap in any gateway's sequence (the spool, and so the
	// instance id, survived the kill).
	dup := query("SELECT count() - uniqExact(event_id) FROM zeroloss.audit_events")
	gaps := query("SELECT gateway_instance, max(seq) - min(seq) + 1 - uniqExact(seq), count() - uniqExact(seq) FROM zeroloss.audit_events GROUP BY gateway_instance FORMAT TSV")
	if len(dup) != 1 || dup[0] != "0" {
		t.Errorf("duplicate events: %v", dup)
	}
	if len(gaps) != 3 || gaps[1] != "0" || gaps[2] != "0" {
		t.Errorf("per gateway (instance, missing seqs, repeated seqs): %v; want one instance with 0 and 0", gaps)
	}
	t.Logf("answered requests by phase %v (client errors while the gateway was down: %d); stored request events: %d, each answered one exactly once",
		byPhase, res.errs, len(stored))
}
