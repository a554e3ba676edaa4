package soak

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// rig is everything the soak runs: one kube-apiserver, Samba AD, the OpenID provider, one
// ClickHouse server, and two gateway replicas in front of the API server that share session
// keys, the revocations ConfigMap, the Leases and the audit store.
type rig struct {
	t        *testing.T
	dir      string
	cluster  *testenv.Cluster
	ad       *testenv.AD
	idp      *testenv.OIDCProvider
	ch       *testenv.ClickHouse
	bin      string
	keysDir  string
	replicas []*replica
	ca       *x509.CertPool
	db       string
}

// replica is one gateway process, restartable on the same ports and state.
type replica struct {
	name, url, opsURL string
	cfgPath, dir      string
	spoolDir          string
	client            *http.Client
	ready             atomic.Bool // the load balancer's view: its /readyz answered 200

	mu    sync.Mutex
	child *testenv.Child
}

const (
	soakNamespace = "soak"
	adPassword    = "Soak-passw0rd"
	policyYAML    = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: cm-editor
  rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch", "create", "delete"]}]
- name: secret-reader
  rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"]}]
bindings:
- name: soak-devs
  groups: ["corp:soak-devs", "idp:developers"]
  role: cm-editor
  namespaces: ["soak"]
elevations:
- name: read-secrets
  role: secret-reader
  namespaces: ["soak"]
  requesters: ["corp:soak-devs"]
  approvers: ["corp:soak-leads"]
  maxDuration: 1h
`
)

func startRig(t *testing.T) *rig {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := &rig{t: t, dir: t.TempDir(), db: "soak"}
	progress("starting kube-apiserver, Samba AD, the OpenID provider and ClickHouse")
	var err error
	if r.cluster, err = testenv.StartCluster(ctx, testenv.ClusterConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.cluster.Stop() })
	if r.ad, err = testenv.StartAD(ctx, testenv.ADConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ad.Stop() })
	if r.idp, err = testenv.StartOIDCProvider(ctx, testenv.OIDCProviderConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.idp.Stop() })
	if r.ch, err = testenv.StartClickHouse(ctx, testenv.ClickHouseConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ch.Close() })
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS " + r.db, fmt.Sprintf(testenv.LegacyAuditTableDDL, r.db+".audit_events")} {
		if _, err := r.ch.Query(q); err != nil {
			t.Fatal(err)
		}
	}
	r.cluster.MustNamespace(t, soakNamespace)
	r.cluster.MustNamespace(t, "kaccess-system")
	progress("creating the directory population")
	users := append(append([]string{}, readerNames()...), "soak-lead")
	for _, u := range users {
		if err := r.ad.CreateUser(ctx, u, adPassword); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"soak-devs", "soak-leads", "soak-auditors"} {
		if err := r.ad.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	must(t, r.ad.AddMembers(ctx, "soak-devs", readerNames()...))
	must(t, r.ad.AddMembers(ctx, "soak-leads", "soak-lead"))
	must(t, r.ad.AddMembers(ctx, "soak-auditors", "soak-lead"))

	progress("building and starting two gateway replicas")
	r.bin = testenv.BuildBinary(t, "cmd/gateway", r.dir)
	r.keysDir = filepath.Join(r.dir, "session-keys")
	writeFile(t, filepath.Join(r.dir, "policy.yaml"), policyYAML)
	writeFile(t, filepath.Join(r.dir, "bind-password"), r.ad.ServicePassword)
	writeFile(t, filepath.Join(r.dir, "clickhouse-password"), r.ch.Password+"\n")
	// Replica b's spool is a small disk of its own, so the soak can fill it.
	spoolB := testenv.MountTmpfs(t, 48<<20)
	for i, name := range []string{"gw-a", "gw-b"} {
		ports := testenv.FreePorts(t, 2)
		rep := &replica{name: name, dir: filepath.Join(r.dir, name),
			url: fmt.Sprintf("https://127.0.0.1:%d", ports[0]), opsURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
		rep.spoolDir = filepath.Join(rep.dir, "spool")
		if i == 1 {
			rep.spoolDir = spoolB
		}
		must(t, os.MkdirAll(rep.dir, 0o700))
		tlsLine := ""
		if i == 1 { // the replicas serve one certificate, as behind one load balancer name
			tlsDir := filepath.Join(r.replicas[0].dir, "state", "tls")
			tlsLine = fmt.Sprintf("tls: {certFile: %q, keyFile: %q}\n", filepath.Join(tlsDir, "serving.crt"), filepath.Join(tlsDir, "serving.key"))
		}
		rep.cfgPath = filepath.Join(rep.dir, "gateway.yaml")
		writeFile(t, rep.cfgPath, r.config(rep, ports, tlsLine))
		r.replicas = append(r.replicas, rep)
		r.start(rep, true)
		if i == 0 {
			ca, err := os.ReadFile(filepath.Join(rep.dir, "state", "tls", "ca.crt"))
			must(t, err)
			r.ca = x509.NewCertPool()
			r.ca.AppendCertsFromPEM(ca)
		}
		rep.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: r.ca}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
	}
	return r
}

func (r *rig) config(rep *replica, ports []int, tlsLine string) string {
	return fmt.Sprintf(`listen: {address: "127.0.0.1:%d", opsAddress: "127.0.0.1:%d"}
%sstateDir: %s
clusters: [{name: soak, server: %q, caFile: %q, tokenFile: %q}]
log: {level: info}
directories:
- {name: corp, type: activedirectory, urls: [%q], caFile: %q, bindDN: %q, bindPasswordFile: %q, userBaseDN: %q}
oidc:
- {name: idp, issuerURL: %q, clientIDs: [%q], caFile: %q}
session: {keysDir: %q, ttl: 4h, revocations: kaccess-system/kaccess-revocations}
audit:
  batch: {flushInterval: 200ms}
  spool: {dir: %q}
  clickhouse: {addresses: [%q], database: %s, username: %s, passwordFile: %q}
  auditorGroups: ["corp:soak-auditors"]
access: {policyFile: %q}
`, ports[0], ports[1], tlsLine, filepath.Join(rep.dir, "state"),
		r.cluster.URL, r.cluster.CAFile, r.cluster.GatewayTokenFile,
		r.ad.URL, r.ad.CAFile, r.ad.ServiceDN, filepath.Join(r.dir, "bind-password"), r.ad.BaseDN,
		r.idp.Issuer, testenv.OIDCClientID, r.idp.CAFile,
		r.keysDir, rep.spoolDir, r.ch.Addr, r.db, r.ch.User, filepath.Join(r.dir, "clickhouse-password"),
		filepath.Join(r.dir, "policy.yaml"))
}

// start runs the replica and waits until it answers: ready (/readyz 200) when ready is set,
// else only alive (/healthz), for a start while a dependency is down.
func (r *rig) start(rep *replica, ready bool) time.Duration {
	began := time.Now()
	child := testenv.StartChild(r.t, rep.name+"-"+began.Format("150405.000"), rep.dir, r.bin, "serve", "--config", rep.cfgPath)
	rep.mu.Lock()
	rep.child = child
	rep.mu.Unlock()
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(rep.opsURL + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(began)
			}
		}
		if child.Exited() || time.Now().After(deadline) {
			r.t.Fatalf("%s did not start: %v\n%s", rep.name, err, child.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (rep *replica) kill() error {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.child.Kill()
}

// waitReady polls /readyz until 200 or the timeout.
func (rep *replica) waitReady(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(rep.opsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// query runs a ClickHouse query and returns its TSV cells.
func (r *rig) query(q string) []string {
	out, err := r.ch.Query(q)
	if err != nil {
		r.t.Fatalf("%s: %v", q, err)
	}
	return strings.Fields(out)
}

func readerNames() []string {
	names := make([]string, readers)
	for i := range names {
		names[i] = fmt.Sprintf("soak-user%d", i)
	}
	return names
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(data), 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
