// Command benchproxy is `make bench-proxy`: GETs of one ConfigMap from a real kube-apiserver,
// straight and through bin/gateway run as a user runs it (`make run`'s configuration: audit on
// into the embedded chDB store, default spool and batch settings, an access policy, log level
// info to a file), side by side in one run.
//
// Four rows, each at every client count, in interleaved rounds (the order rotates each round):
//
//	direct, static token        a user's own static token straight to the API server
//	direct, impersonated        the gateway's credentials with the Impersonate-* headers the
//	                            gateway sends for that user (the baseline of the ratio)
//	gateway, audit off          bin/gateway with audit.recordRequests: false
//	gateway, audit on           bin/gateway as make run configures it
//
// Every client has its own HTTP/2 connection over TLS, reused for all its requests, like one
// kubectl or client-go process each. CPU is read per process from /proc/<pid>/stat around each
// round (the gateway's after its spool has been shipped, so it includes the shipper), and the
// load generator's own CPU from getrusage, so it is reported apart and not in anyone's figure.
//
// Settings (environment): BENCH_DURATION per row and round (8s), BENCH_ROUNDS (2),
// BENCH_CLIENTS (1,32), BENCH_PROFILE=DIR to write CPU and allocation profiles of the audited
// gateway under the largest client count after the rounds (listen.pprof on for that gateway),
// BENCH_BASELINE=DIR to add a row for another build's DIR/gateway (with DIR/kaccess-chdb beside
// it), audit on, so a change is measured against the code before it in the same run;
// BENCH_BASELINE_ENV="K=V ..." adds variables to that gateway's environment (GOGC, GOMAXPROCS).
// Directory logins (Active Directory in make run) are not started: a request with a session
// token never reaches them.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/testenv"
)

const (
	namespace = "bench"
	user      = "bench-user"
	group     = "bench:group"
	path      = "/api/v1/namespaces/" + namespace + "/configmaps/bench"
	// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
	clockTicks = 100
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(1)
	}
}

type settings struct {
	duration   time.Duration
	rounds     int
	clients    []int
	profileDir string
	baseline   string
	baseEnv    []string
}

func settingsFromEnv() (settings, error) {
	s := settings{duration: 8 * time.Second, rounds: 2, clients: []int{1, 32}, profileDir: os.Getenv("BENCH_PROFILE"),
		baseline: os.Getenv("BENCH_BASELINE"), baseEnv: strings.Fields(os.Getenv("BENCH_BASELINE_ENV"))}
	if v := os.Getenv("BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return s, fmt.Errorf("BENCH_DURATION=%q: want a duration of at least 1s", v)
		}
		s.duration = d
	}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("BENCH_ROUNDS=%q: want a positive number", v)
		}
		s.rounds = n
	}
	if v := os.Getenv("BENCH_CLIENTS"); v != "" {
		s.clients = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return s, fmt.Errorf("BENCH_CLIENTS=%q: want a list such as 1,32", v)
			}
			s.clients = append(s.clients, n)
		}
	}
	return s, nil
}

// target is one row: where the GETs go and with which headers.
type target struct {
	name   string
	url    string
	ca     []byte
	header http.Header
	gw     *gateway // nil when straight to the API server
}

func run() error {
	set, err := settingsFromEnv()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, bin := range []string{"bin/gateway", "bin/kaccess-chdb"} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing: run `make build` (and `make tools chdb`)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "kaccess-bench-proxy-")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Println(">> keeping", dir)
	}

	staticToken := randomHex(32)
	fmt.Println(">> starting etcd and kube-apiserver")
	cluster, err := testenv.StartCluster(ctx, testenv.ClusterConfig{
		StaticTokens: []testenv.StaticToken{{Token: staticToken, User: user, Groups: []string{group}}},
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	if err := prepare(ctx, cluster); err != nil {
		return err
	}

	fmt.Println(">> starting two gateways (bin/gateway): audit on as make run configures it, and audit off")
	on, err := startGateway(ctx, "bin/gateway", nil, filepath.Join(dir, "gw-audit-on"), cluster, true, set.profileDir != "")
	if err != nil {
		return err
	}
	defer on.stop()
	off, err := startGateway(ctx, "bin/gateway", nil, filepath.Join(dir, "gw-audit-off"), cluster, false, false)
	if err != nil {
		return err
	}
	defer off.stop()

	impersonated, err := impersonationHeaders(on.token, cluster.GatewayToken)
	if err != nil {
		return err
	}
	targets := []target{
		{name: "direct, static token", url: cluster.URL + path, ca: cluster.CAData, header: bearer(staticToken)},
		{name: "direct, impersonated", url: cluster.URL + path, ca: cluster.CAData, header: impersonated},
		{name: "gateway, audit off", url: off.url + path, ca: off.ca, header: bearer(off.token), gw: off},
		{name: "gateway, audit on", url: on.url + path, ca: on.ca, header: bearer(on.token), gw: on},
	}
	if set.baseline != "" {
		base, err := startGateway(ctx, filepath.Join(set.baseline, "gateway"), set.baseEnv, filepath.Join(dir, "gw-baseline"), cluster, true, false)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer base.stop()
		targets = append(targets, target{name: "baseline, audit on", url: base.url + path, ca: base.ca, header: bearer(base.token), gw: base})
	}
	apiPID, etcdPID := cluster.PIDs()
	results := map[string]*result{}
	for round := range set.rounds {
		for _, clients := range set.clients {
			for i := range targets {
				t := targets[(i+round)%len(targets)]
				fmt.Printf(">> round %d/%d, %2d clients: %s\n", round+1, set.rounds, clients, t.name)
				s, err := measure(ctx, t, clients, set.duration, apiPID, etcdPID, nil)
				if err != nil {
					return fmt.Errorf("%s, %d clients: %w", t.name, clients, err)
				}
				key := fmt.Sprintf("%d/%s", clients, t.name)
				if results[key] == nil {
					results[key] = &result{}
				}
				results[key].add(s)
			}
		}
	}
	printTable(os.Stdout, set, targets, results)
	if set.profileDir != "" {
		return profile(ctx, set, targets[3], apiPID, etcdPID)
	}
	return nil
}

// prepare creates the ConfigMap and lets the bench user read it.
func prepare(ctx context.Context, c *testenv.Cluster) error {
	if err := c.EnsureNamespace(ctx, namespace); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Data: map[string]string{"greeting": "hello"}}
	if _, err := c.AdminClient().CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	read := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}
	return c.GrantRole(ctx, namespace, "bench-read", []rbacv1.PolicyRule{read}, testenv.User(user))
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}, "Accept": {"application/json"}}
}

// impersonationHeaders are what the gateway sends upstream for the user of token: the
// gateway's own credential and the user, groups and extras of the session (see proxy.go).
func impersonationHeaders(token, gatewayToken string) (http.Header, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("the minted token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c struct {
		Sub, Jti, UID, Src string
		Groups             []string
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	h := bearer(gatewayToken)
	h.Set("Impersonate-User", c.Sub)
	if c.UID != "" {
		h.Set("Impersonate-Uid", c.UID)
	}
	for _, g := range c.Groups {
		h.Add("Impersonate-Group", g)
	}
	h.Set("Impersonate-Extra-Kaccess.io%2Fsource", c.Src)
	h.Set("Impersonate-Extra-Kaccess.io%2Fsession-Id-Hash", authn.HashSessionID(c.Jti))
	return h, nil
}

// sample is one row's figures from one round.
type sample struct {
	requests, errors int
	elapsed          time.Duration // of the load
	window           time.Duration // of the CPU figures: the load, then shipping its records
	latencies        []time.Duration
	cpu              map[string]time.Duration // by process: gateway, chdb, apiserver, etcd, loadgen
	chdbPeak         float64                  // highest share of one CPU the chDB helper took in a 250 ms window
}

// measure runs one row for d with that many clients, each on its own connection.
func measure(ctx context.Context, t target, clients int, d time.Duration, apiPID, etcdPID int, during func()) (sample, error) {
	s := sample{cpu: map[string]time.Duration{}}
	reqs := make([]*http.Request, clients)
	cls := make([]*http.Client, clients)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(t.ca)
	for i := range clients {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		cls[i] = &http.Client{Transport: tr}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
		if err != nil {
			return s, err
		}
		req.Header = t.header.Clone()
		req.Header.Set("User-Agent", "kaccess-bench-proxy")
		reqs[i] = req
	}
	get := func(i int) error {
		resp, err := cls[i].Do(reqs[i])
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", t.url, resp.Status)
		}
		return nil
	}
	// Warm up: connect every client and fill the caches, unmeasured.
	var wg sync.WaitGroup
	var warmErr error
	var mu sync.Mutex
	for i := range clients {
		wg.Go(func() {
			for range 20 {
				if err := get(i); err != nil {
					mu.Lock()
					warmErr = err
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if warmErr != nil {
		return s, warmErr
	}
	var gwPID, chdbPID int
	if t.gw != nil {
		gwPID, chdbPID = t.gw.pid(), t.gw.helperPID()
	}
	pids := map[string]int{"gateway": gwPID, "chdb": chdbPID, "apiserver": apiPID, "etcd": etcdPID}
	before := map[string]time.Duration{"loadgen": selfCPU(), "machine": machineCPU()}
	for name, pid := range pids {
		before[name] = procCPU(pid)
	}
	peak := make(chan float64, 1)
	stopPeak := make(chan struct{})
	go func() { peak <- watchPeak(chdbPID, stopPeak) }()

	start := time.Now()
	deadline := start.Add(d)
	lat := make([][]time.Duration, clients)
	errs := make([]int, clients)
	for i := range clients {
		wg.Go(func() {
			for {
				t0 := time.Now()
				if t0.After(deadline) || ctx.Err() != nil {
					return
				}
				if err := get(i); err != nil {
					errs[i]++
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	if during != nil {
		during()
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	s.cpu["loadgen"] = selfCPU() - before["loadgen"]
	s.cpu["apiserver"] = procCPU(apiPID) - before["apiserver"]
	s.cpu["etcd"] = procCPU(etcdPID) - before["etcd"]
	if t.gw != nil {
		// The records of this round are the gateway's (and the store's) work too.
		if err := t.gw.waitShipped(ctx); err != nil {
			return s, err
		}
		s.cpu["gateway"] = procCPU(gwPID) - before["gateway"]
		s.cpu["chdb"] = procCPU(chdbPID) - before["chdb"]
	}
	s.cpu["machine"] = machineCPU() - before["machine"]
	s.window = time.Since(start)
	close(stopPeak)
	s.chdbPeak = <-peak
	for i := range clients {
		s.latencies = append(s.latencies, lat[i]...)
		s.errors += errs[i]
	}
	s.requests = len(s.latencies)
	if s.requests == 0 {
		return s, errors.New("no request succeeded")
	}
	return s, ctx.Err()
}

// watchPeak samples pid's CPU every 250 ms until stop and returns the highest share of one
// CPU it used in a window: how hard the embedded store's inserts burst.
func watchPeak(pid int, stop <-chan struct{}) float64 {
	if pid == 0 {
		return 0
	}
	const window = 250 * time.Millisecond
	t := time.NewTicker(window)
	defer t.Stop()
	last, lastAt, peak := procCPU(pid), time.Now(), 0.0
	for {
		select {
		case <-stop:
			return peak
		case now := <-t.C:
			cur := procCPU(pid)
			peak = max(peak, float64(cur-last)/float64(now.Sub(lastAt)))
			last, lastAt = cur, now
		}
	}
}

// result is a row at one client count over all rounds.
type result struct {
	requests, errors int
	elapsed, window  time.Duration
	latencies        []time.Duration
	cpu              map[string]time.Duration
	chdbPeak         float64
}

func (r *result) add(s sample) {
	if r.cpu == nil {
		r.cpu = map[string]time.Duration{}
	}
	r.requests += s.requests
	r.errors += s.errors
	r.elapsed += s.elapsed
	r.window += s.window
	r.latencies = append(r.latencies, s.latencies...)
	for k, v := range s.cpu {
		r.cpu[k] += v
	}
	r.chdbPeak = max(r.chdbPeak, s.chdbPeak)
}

func (r *result) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r *result) percentile(p float64) time.Duration {
	slices.Sort(r.latencies)
	return r.latencies[min(len(r.latencies)-1, int(float64(len(r.latencies))*p))]
}

func (r *result) perRequest(proc string) time.Duration {
	return r.cpu[proc] / time.Duration(r.requests)
}

func printTable(w io.Writer, set settings, targets []target, results map[string]*result) {
	fmt.Fprintf(w, "\nGET %s, %d round(s) x %s per row, interleaved; %d CPUs; every request audited in the \"audit on\" row\n",
		path, set.rounds, set.duration, runtime.NumCPU())
	fmt.Fprintf(w, "%-7s %-21s %6s %5s %8s %8s %8s %6s %6s %5s %6s %5s %5s %5s %5s\n", "clients", "row", "req/s", "ratio",
		"p50", "+p50", "p99", "gw µs", "chdb µs", "peak", "apisrv", "etcd", "load", "other", "busy")
	us := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1e3) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d.Nanoseconds())/1e6) }
	for _, clients := range set.clients {
		base := results[fmt.Sprintf("%d/%s", clients, targets[1].name)]
		for _, t := range targets {
			r := results[fmt.Sprintf("%d/%s", clients, t.name)]
			gw, chdb, peak := "-", "-", "-"
			if t.gw != nil {
				gw, chdb, peak = us(r.perRequest("gateway")), us(r.perRequest("chdb")), fmt.Sprintf("%.0f%%", 100*r.chdbPeak)
			}
			other := r.cpu["machine"]
			for _, p := range []string{"gateway", "chdb", "apiserver", "etcd", "loadgen"} {
				other -= r.cpu[p]
			}
			fmt.Fprintf(w, "%-7d %-21s %6.0f %5.2f %8s %8s %8s %6s %6s %5s %6s %5s %5s %5s %4.0f%%", clients, t.name, r.rps(), r.rps()/base.rps(),
				ms(r.percentile(0.50)), ms(r.percentile(0.50)-base.percentile(0.50)), ms(r.percentile(0.99)),
				gw, chdb, peak, us(r.perRequest("apiserver")), us(r.perRequest("etcd")), us(r.perRequest("loadgen")),
				us(other/time.Duration(r.requests)), 100*r.cpu["machine"].Seconds()/r.window.Seconds()/float64(runtime.NumCPU()))
			if r.errors > 0 {
				fmt.Fprintf(w, "  (%d errors)", r.errors)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "\nratio, +p50: against \"direct, impersonated\" at the same client count. gw µs ... other: CPU µs per request of")
	fmt.Fprintln(w, "each process (gw: the gateway with its shipper, after the round's records were shipped; chdb: the kaccess-chdb")
	fmt.Fprintln(w, "helper; load: this load generator; other: everything else on the machine). peak: the most of one CPU the chdb")
	fmt.Fprintln(w, "helper took in any 250 ms window. busy: all CPUs' busy share while the round ran.")
}

// profile loads the audited gateway at the largest client count while taking its CPU profile
// and an allocation profile of the same window.
func profile(ctx context.Context, set settings, t target, apiPID, etcdPID int) error {
	if err := os.MkdirAll(set.profileDir, 0o755); err != nil {
		return err
	}
	secs := max(1, int(set.duration.Seconds())-1)
	clients := slices.Max(set.clients)
	fmt.Printf("\n>> profiling %q at %d clients for %ds into %s\n", t.name, clients, secs, set.profileDir)
	var errs []error
	var mu sync.Mutex
	during := func() {
		var wg sync.WaitGroup
		for name, q := range map[string]string{"cpu.pprof": "profile", "allocs.pprof": "allocs"} {
			wg.Go(func() {
				err := fetch(t.gw.opsURL+"/debug/pprof/"+q+"?seconds="+strconv.Itoa(secs), filepath.Join(set.profileDir, name))
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	s, err := measure(ctx, t, clients, set.duration, apiPID, etcdPID, during)
	if err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%d requests in %s while profiling: %.0f req/s, gateway CPU %s (%.0f µs per request)\n", s.requests,
		s.elapsed.Round(time.Millisecond), float64(s.requests)/s.elapsed.Seconds(), s.cpu["gateway"],
		float64(s.cpu["gateway"].Microseconds())/float64(s.requests))
	fmt.Printf("go tool pprof -top bin/gateway %s/cpu.pprof; go tool pprof -sample_index=alloc_space -top bin/gateway %s/allocs.pprof\n",
		set.profileDir, set.profileDir)
	return nil
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// gateway is one bin/gateway process.
type gateway struct {
	cmd    *exec.Cmd
	url    string
	opsURL string
	ca     []byte
	token  string
	exited chan struct{}
}

// startGateway writes make run's configuration (less the directory) into dir, with requests
// recorded or not, starts the gateway binary bin on it (with env added to its environment) and
// mints a session token for the bench user.
func startGateway(ctx context.Context, bin string, env []string, dir string, c *testenv.Cluster, audit, pprof bool) (*gateway, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(accessPolicy), 0o600); err != nil {
		return nil, err
	}
	// Only what differs from make run is written, so an older build (BENCH_BASELINE) reads it.
	var extraListen, extraAudit string
	if pprof {
		extraListen = "  pprof: true\n"
	}
	if !audit {
		extraAudit = "  recordRequests: false\n"
	}
	cfg := fmt.Sprintf(`listen:
  address: "127.0.0.1:%d"
  opsAddress: "127.0.0.1:%d"
%sstateDir: %q
clusters:
  - name: local
    server: %q
    caFile: %q
    tokenFile: %q
access:
  policyFile: %q
audit:
  auditorGroups: ["corp:team-leads"]
%slog:
  level: info
`, ports[0], ports[1], extraListen, filepath.Join(dir, "state"), c.URL, c.CAFile, c.GatewayTokenFile, policy, extraAudit)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return nil, err
	}
	g := &gateway{
		cmd: exec.Command(bin, "serve", "--config", cfgPath),
		url: fmt.Sprintf("https://127.0.0.1:%d", ports[0]), opsURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		exited: make(chan struct{}),
	}
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout, g.cmd.Stderr = log, log
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	go func() { _ = g.cmd.Wait(); log.Close(); close(g.exited) }()
	if err := g.waitReady(ctx); err != nil {
		g.stop()
		return nil, fmt.Errorf("%w; see %s", err, log.Name())
	}
	if g.ca, err = os.ReadFile(filepath.Join(dir, "state", "tls", "ca.crt")); err != nil {
		g.stop()
		return nil, err
	}
	out, err := exec.Command(bin, "token", "--config", cfgPath, "--user", user, "--group", group).Output()
	if err != nil {
		g.stop()
		return nil, fmt.Errorf("gateway token: %w", err)
	}
	g.token = strings.TrimSpace(string(out))
	// The shipper starts the chDB helper when it connects to the store.
	for deadline := time.Now().Add(120 * time.Second); g.helperPID() == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("no kaccess-chdb helper under the gateway after 120s; see %s", log.Name())
		}
	}
	return g, nil
}

// accessPolicy is a small policy like make run's, so the grants step runs as it does there.
const accessPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: bench-editor
  rules:
  - {apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]}
bindings:
- name: engineering
  groups: ["corp:engineering"]
  role: bench-editor
  namespaces: ["bench"]
`

func (g *gateway) pid() int { return g.cmd.Process.Pid }

func (g *gateway) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

func (g *gateway) waitReady(ctx context.Context) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		select {
		case <-g.exited:
			return errors.New("the gateway exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if resp, err := http.Get(g.opsURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("the gateway did not become ready within 60s")
}

// waitShipped waits until the store confirmed every record in the spool.
func (g *gateway) waitShipped(ctx context.Context) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		n, err := g.metric("kaccess_audit_spool_pending_records")
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the audit spool was not shipped within 60s")
}

func (g *gateway) metric(name string) (float64, error) {
	resp, err := http.Get(g.opsURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// helperPID finds the gateway's kaccess-chdb child, or 0. It goes by the command line: the
// engine renames its threads, the main one included, so the command name changes.
func (g *gateway) helperPID() int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, ok := parentPID(pid)
		if !ok || ppid != g.pid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if exe, _, _ := bytes.Cut(cmdline, []byte{0}); filepath.Base(string(exe)) == "kaccess-chdb" {
			return pid
		}
	}
	return 0
}

// parentPID returns the parent of pid.
func parentPID(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name: state is field 3, the parent field 4.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// procCPU is the user plus system CPU time of every thread of pid so far (0 for pid 0).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name: state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// machineCPU is the CPU time all CPUs spent busy (not idle or waiting for I/O) so far.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range f[1:] {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// selfCPU is the user plus system CPU time of this process (the load generator).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
