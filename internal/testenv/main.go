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

// shared is the cluster of this test binary, set by RunWithCluster.
var shared *Cluster

// startTimeout bounds a cluster start in TestMain (the readiness poll has its own 60 s).
const startTimeout = 2 * time.Minute

// RunWithCluster starts one cluster for the test binary, runs its tests and stops it.
// Use it as: func TestMain(m *testing.M) { os.Exit(testenv.RunWithCluster(m)) }.
// A cluster that cannot start fails the binary: these tests never skip a missing component.
func RunWithCluster(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse() // m.Run would parse too, but testing.Verbose needs the flags now
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	guard := guardInterrupts(cancel)
	defer guard.release()

	c, err := StartCluster(ctx, ClusterConfig{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: cannot start etcd + kube-apiserver for the integration tests: %v\n", err)
		if !errors.Is(err, fs.ErrNotExist) { // a missing binary's error already says this
			fmt.Fprintln(os.Stderr, "testenv: if bin/kube-apiserver or bin/etcd are missing or stale, run `make tools` to build them")
		}
		return 1
	}
	if !guard.track(c) { // interrupted just as the start finished
		_ = c.Stop()
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "testenv: cluster at %s ready in %s\n", c.URL, c.StartupTime.Round(time.Millisecond))
	}
	shared = c
	code := m.Run()
	guard.release()
	shared = nil
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop cluster: %v\n", err)
	}
	return code
}

// interruptGuard stops the cluster on Ctrl-C or SIGTERM. Pdeathsig would kill the processes
// anyway, but the state dir (over 100 MB of etcd preallocation) would stay behind.
type interruptGuard struct {
	sigs        chan os.Signal
	releaseOnce sync.Once
	mu          sync.Mutex
	interrupted bool
	cluster     *Cluster
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
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the cluster\n", sig)
		g.mu.Lock()
		g.interrupted = true
		c := g.cluster
		g.mu.Unlock()
		cancelStart()
		if c != nil {
			_ = c.Stop()
			os.Exit(1)
		}
	}()
	return g
}

// track hands the started cluster to the guard; false means an interrupt came first.
func (g *interruptGuard) track(c *Cluster) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cluster = c
	return !g.interrupted
}

// release restores default signal handling; safe to call more than once.
func (g *interruptGuard) release() {
	g.releaseOnce.Do(func() {
		signal.Stop(g.sigs)
		close(g.sigs)
	})
}

// Shared returns the cluster started by RunWithCluster in this binary's TestMain.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	if shared == nil {
		tb.Fatal("testenv: no cluster: call os.Exit(testenv.RunWithCluster(m)) from this package's TestMain")
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
