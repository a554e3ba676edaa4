package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
)

// The components of this test binary, set by Run.
var (
	shared         *Cluster
	sharedAD       *AD
	sharedOpenLDAP *OpenLDAP
	sharedCH       *ClickHouse
)

// startTimeout bounds the start of all components in TestMain (each readiness poll has its
// own 60 s). It includes waiting for another test binary's Samba to stop (see AD).
const startTimeout = 4 * time.Minute

// stopper is a started component.
type stopper interface{ Stop() error }

// component is one thing Run starts: start returns it, or an error with advice for the person.
type component struct {
	name  string
	start func(ctx context.Context) (stopper, error)
	ready func(verbose bool, s stopper)
	clear func()
}

// Option is a component for Run to start: WithCluster, WithAD, WithOpenLDAP, WithClickHouse.
type Option struct{ c component }

// WithCluster starts a real etcd + kube-apiserver; tests reach it with Shared.
func WithCluster() Option {
	return Option{component{
		name: "etcd + kube-apiserver",
		start: func(ctx context.Context) (stopper, error) {
			c, err := StartCluster(ctx, ClusterConfig{})
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) { // a missing binary's error already says this
					err = fmt.Errorf("%w\ntestenv: if bin/kube-apiserver or bin/etcd are missing or stale, run `make tools` to build them", err)
				}
				return nil, err
			}
			shared = c
			return c, nil
		},
		ready: func(verbose bool, s stopper) {
			if c := s.(*Cluster); verbose {
				fmt.Fprintf(os.Stderr, "testenv: cluster at %s ready in %s\n", c.URL, c.StartupTime.Round(time.Millisecond))
			}
		},
		clear: func() { shared = nil },
	}}
}

// WithAD starts a real Samba Active Directory domain controller; tests reach it with
// SharedAD. Only one runs per machine: a second test binary waits for the first (see AD).
func WithAD() Option {
	return Option{component{
		name: "Samba AD domain controller",
		start: func(ctx context.Context) (stopper, error) {
			a, err := StartAD(ctx, ADConfig{})
			if err != nil {
				return nil, fmt.Errorf("%w\ntestenv: if samba, samba-tool or ldapadd are missing, run hack/deps.sh", err)
			}
			sharedAD = a
			return a, nil
		},
		ready: func(verbose bool, s stopper) {
			if a := s.(*AD); verbose {
				fmt.Fprintf(os.Stderr, "testenv: Samba AD at %s ready in %s\n", a.URL, a.StartupTime.Round(time.Millisecond))
			}
		},
		clear: func() { sharedAD = nil },
	}}
}

// WithOpenLDAP starts a private OpenLDAP slapd; tests reach it with SharedOpenLDAP.
func WithOpenLDAP() Option {
	return Option{component{
		name: "OpenLDAP slapd",
		start: func(ctx context.Context) (stopper, error) {
			o, err := StartOpenLDAP(ctx, OpenLDAPConfig{})
			if err != nil {
				return nil, fmt.Errorf("%w\ntestenv: if slapd or its schemas are missing, run hack/deps.sh", err)
			}
			sharedOpenLDAP = o
			return o, nil
		},
		ready: func(verbose bool, s stopper) {
			if o := s.(*OpenLDAP); verbose {
				fmt.Fprintf(os.Stderr, "testenv: OpenLDAP at %s ready in %s\n", o.URL, o.StartupTime.Round(time.Millisecond))
			}
		},
		clear: func() { sharedOpenLDAP = nil },
	}}
}

// WithClickHouse starts a private clickhouse-server (Debian's 18.16); tests reach it with
// SharedClickHouse. It runs even when KACCESS_CLICKHOUSE_ADDR names a modern server (see
// ModernClickHouseAddr): the writer's outage tests need a server they can stop and start.
func WithClickHouse() Option {
	return Option{component{
		name: "ClickHouse server",
		start: func(ctx context.Context) (stopper, error) {
			c, err := StartClickHouse(ctx, ClickHouseConfig{})
			if err != nil {
				return nil, fmt.Errorf("%w\ntestenv: if clickhouse-server is missing, run hack/deps.sh", err)
			}
			sharedCH = c
			return closeOnStop{c}, nil
		},
		ready: func(verbose bool, s stopper) {
			if c := s.(closeOnStop).ClickHouse; verbose {
				fmt.Fprintf(os.Stderr, "testenv: ClickHouse at %s ready in %s\n", c.Addr, c.StartupTime.Round(time.Millisecond))
			}
		},
		clear: func() { sharedCH = nil },
	}}
}

// closeOnStop makes Run's final Stop a Close: ClickHouse.Stop alone keeps the data for Start.
type closeOnStop struct{ *ClickHouse }

func (c closeOnStop) Stop() error { return c.Close() }

// RunWithCluster starts one cluster for the test binary, runs its tests and stops it.
// Use it as: func TestMain(m *testing.M) { os.Exit(testenv.RunWithCluster(m)) }.
// A cluster that cannot start fails the binary: these tests never skip a missing component.
func RunWithCluster(m *testing.M) int { return Run(m, WithCluster()) }

// Run starts the components the options name (at the same time), runs the tests and stops
// them, returning the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithCluster(), testenv.WithAD())) }
//
// A component that cannot start fails the binary, locally and in CI: never a skip.
func Run(m *testing.M, opts ...Option) int {
	if !flag.Parsed() {
		flag.Parse() // m.Run would parse too, but testing.Verbose needs the flags now
	}
	comps := make([]component, len(opts))
	for i, o := range opts {
		comps[i] = o.c
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	guard := guardInterrupts(cancel)
	defer guard.release()

	started := make([]stopper, len(comps))
	errs := make([]error, len(comps))
	var wg sync.WaitGroup
	for i, c := range comps {
		wg.Go(func() { started[i], errs[i] = c.start(ctx) })
	}
	wg.Wait()
	failed := false
	for i, c := range comps {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "testenv: cannot start %s for the integration tests: %v\n", c.name, errs[i])
			failed = true
		}
	}
	var running []stopper
	for _, s := range started {
		if s != nil {
			running = append(running, s)
		}
	}
	stopAll := func() {
		for i := len(running) - 1; i >= 0; i-- {
			if err := running[i].Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
			}
		}
		for _, c := range comps {
			c.clear()
		}
	}
	if failed || !guard.track(running) { // a failure, or interrupted just as the start finished
		stopAll()
		return 1
	}
	for i, c := range comps {
		c.ready(testing.Verbose(), started[i])
	}
	code := m.Run()
	guard.release()
	stopAll()
	cleanupChDB()
	return code
}

// interruptGuard stops the components on Ctrl-C or SIGTERM. Pdeathsig would kill the
// processes anyway, but the state dirs (over 100 MB of etcd preallocation) would stay behind.
type interruptGuard struct {
	sigs        chan os.Signal
	releaseOnce sync.Once
	mu          sync.Mutex
	interrupted bool
	running     []stopper
}

// guardInterrupts starts the guard; cancelStart aborts a start in progress, which then
// cleans up after itself.
func guardInterrupts(cancelStart context.CancelFunc) *interruptGuard {
	g := &interruptGuard{sigs: make(chan os.Signal, 1)}
	signal.Notify(g.sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig, ok := <-g.sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the test components\n", sig)
		g.mu.Lock()
		g.interrupted = true
		running := g.running
		g.mu.Unlock()
		cancelStart()
		if running != nil {
			for i := len(running) - 1; i >= 0; i-- {
				_ = running[i].Stop()
			}
			os.Exit(1)
		}
	}()
	return g
}

// track hands the started components to the guard; false means an interrupt came first.
func (g *interruptGuard) track(running []stopper) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running = append([]stopper{}, running...)
	return !g.interrupted
}

// release restores default signal handling; safe to call more than once.
func (g *interruptGuard) release() {
	g.releaseOnce.Do(func() {
		signal.Stop(g.sigs)
		close(g.sigs)
	})
}

// SharedAD returns the domain controller started by Run(m, WithAD()) in this binary's TestMain.
func SharedAD(tb testing.TB) *AD {
	tb.Helper()
	if sharedAD == nil {
		tb.Fatal("testenv: no AD: call os.Exit(testenv.Run(m, testenv.WithAD())) from this package's TestMain")
	}
	return sharedAD
}

// SharedOpenLDAP returns the slapd started by Run(m, WithOpenLDAP()) in this binary's TestMain.
func SharedOpenLDAP(tb testing.TB) *OpenLDAP {
	tb.Helper()
	if sharedOpenLDAP == nil {
		tb.Fatal("testenv: no OpenLDAP: call os.Exit(testenv.Run(m, testenv.WithOpenLDAP())) from this package's TestMain")
	}
	return sharedOpenLDAP
}

// SharedClickHouse returns the server started by Run(m, WithClickHouse()) in this binary's
// TestMain.
func SharedClickHouse(tb testing.TB) *ClickHouse {
	tb.Helper()
	if sharedCH == nil {
		tb.Fatal("testenv: no ClickHouse: call os.Exit(testenv.Run(m, testenv.WithClickHouse())) from this package's TestMain")
	}
	return sharedCH
}

// ModernClickHouseAddr returns the native address of the modern ClickHouse server named by
// KACCESS_CLICKHOUSE_ADDR, and whether one is named. Tests that need the production schema
// (DateTime64, Map, TTL) run against it; without it they are not run by `go test ./...`, which
// has only Debian's 18.16 (`make test-clickhouse CLICKHOUSE_ADDR=host:9000` sets it).
func ModernClickHouseAddr() (string, bool) {
	addr := os.Getenv(ClickHouseAddrEnv)
	return addr, addr != ""
}

// Shared returns the cluster started by RunWithCluster in this binary's TestMain.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	if shared == nil {
		tb.Fatal("testenv: no cluster: call os.Exit(testenv.RunWithCluster(m)) (or Run with WithCluster) from this package's TestMain")
	}
	return shared
}

// MustNamespace creates namespace name unless it exists. It is not deleted afterwards:
// without a controller-manager it would stay Terminating; pick a name unique to the test.
func (c *Cluster) MustNamespace(tb testing.TB, name string) {
	tb.Helper()
	if err := c.EnsureNamespace(context.Background(), name); err != nil {
		tb.Fatal(err)
	}
}

// MustGrantRole is GrantRole that fails tb on error and revokes the grant when tb ends.
func (c *Cluster) MustGrantRole(tb testing.TB, namespace, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	tb.Helper()
	if err := c.GrantRole(context.Background(), namespace, name, rules, subjects...); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.RevokeRole(context.Background(), namespace, name); err != nil {
			tb.Error(err)
		}
	})
}

// MustKubeconfig writes a kubeconfig for user/token into a temp dir of tb and returns its
// path, e.g. for kubectl --kubeconfig.
func (c *Cluster) MustKubeconfig(tb testing.TB, user, token string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(path, user, token); err != nil {
		tb.Fatal(err)
	}
	return path
}
