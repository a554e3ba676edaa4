package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// benchResult is one side of the side-by-side comparison.
type benchResult struct {
	rps      float64
	p50, p99 time.Duration
	// cpuPerReq is this process's CPU per request: the load generator's, plus the gateway's
	// when it serves in this process. The difference between the two runs is the gateway's.
	cpuPerReq time.Duration
}

// BenchmarkGatewayVsDirect compares GETs through the gateway with GETs straight to
// kube-apiserver as the same identity (the gateway's credentials impersonating the user, which
// is what the gateway forwards), at 32 concurrent clients and at one, in one run, and prints the
// ratios. At 32 clients the API server, the gateway and the load share this machine's CPUs, so
// the gateway's own CPU per request is printed too.
func BenchmarkGatewayVsDirect(b *testing.B) {
	c := testenv.Shared(b)
	c.MustNamespace(b, "bench")
	c.MustGrantRole(b, "bench", "bench-read", []rbacv1.PolicyRule{readConfigMaps}, testenv.User("bench-user"))
	_, err := c.AdminClient().CoreV1().ConfigMaps("bench").Create(context.Background(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	g := startGateway(b, func(c *config.Config) { c.Log.Level = "error" })
	token := g.mint(b, "bench-user", "bench:group")
	path := "/api/v1/namespaces/bench/configmaps/bench"

	direct := func(req *http.Request) {
		req.Header.Set("Authorization", "Bearer "+c.GatewayToken)
		req.Header.Set("Impersonate-User", "bench-user")
		req.Header.Add("Impersonate-Group", "bench:group")
		req.Header.Set("Impersonate-Uid", "uid-bench-user")
		req.Header.Set("Impersonate-Extra-Kaccess.io%2Fsource", "test")
	}
	viaGateway := func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+token) }

	for _, clients := range []int{32, 1} {
		results := map[string]benchResult{}
		b.Run(fmt.Sprintf("clients=%d/direct", clients), func(b *testing.B) { results["direct"] = loadGET(b, clients, c.URL+path, c.CAData, direct) })
		b.Run(fmt.Sprintf("clients=%d/gateway", clients), func(b *testing.B) { results["gateway"] = loadGET(b, clients, g.URL+path, g.CAPEM, viaGateway) })
		d, gw := results["direct"], results["gateway"]
		if d.rps > 0 && gw.rps > 0 {
			fmt.Printf("gateway/direct at %d clients: throughput ratio %.2f (gateway %.0f req/s, direct %.0f req/s); "+
				"p50 %v vs %v; p99 %v vs %v (added %v); gateway CPU per request %v\n",
				clients, gw.rps/d.rps, gw.rps, d.rps, gw.p50.Round(time.Microsecond), d.p50.Round(time.Microsecond),
				gw.p99.Round(time.Microsecond), d.p99.Round(time.Microsecond), (gw.p99 - d.p99).Round(time.Microsecond),
				gw.cpuPerReq-d.cpuPerReq)
		}
	}
}

// loadGET runs b.N GETs from that many concurrent clients and reports throughput and latency
// percentiles.
func loadGET(b *testing.B, clients int, url string, caPEM []byte, auth func(*http.Request)) benchResult {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
	}}
	defer client.CloseIdleConnections()
	get := func() time.Duration {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", "application/json")
		auth(req)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Errorf("GET %s: %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 50 { // warm up connections and caches
		get()
	}
	var mu sync.Mutex
	var all []time.Duration
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	cpuBefore := processCPU()
	start := time.Now()
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				mine = append(mine, get())
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpuBefore
	b.StopTimer()
	slices.Sort(all)
	r := benchResult{rps: float64(len(all)) / elapsed.Seconds()}
	if len(all) > 0 {
		r.cpuPerReq = cpu / time.Duration(len(all))
	}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	b.ReportMetric(r.rps, "req/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(r.cpuPerReq.Microseconds()), "cpu-µs/req")
	return r
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
