package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the gateway's Prometheus series. Labels stay bounded: verbs and resources come
// from the Kubernetes API's own vocabulary, never from user names or object names.
type metrics struct {
	registry       *prometheus.Registry
	requests       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	inflight       *prometheus.GaugeVec
	authn          *prometheus.CounterVec
	upstreamErrors *prometheus.CounterVec
	upstreamReady  *prometheus.GaugeVec
	logins         *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaccess_requests_total",
			Help: "Requests through the gateway by cluster, verb, resource and HTTP code.",
		}, []string{"cluster", "verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kaccess_request_duration_seconds",
			Help: "Time to answer an ordinary (not long-running) request, gateway and upstream together.",
			// From sub-millisecond cache hits to slow list calls.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"cluster", "verb", "resource"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kaccess_requests_inflight",
			Help: "Requests being served, split by long-running (watch, exec, attach, port-forward) or not.",
		}, []string{"cluster", "long_running"}),
		authn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaccess_authentication_attempts_total",
			Help: "Authentication outcomes: success, or the reason a credential was refused.",
		}, []string{"source", "result"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaccess_upstream_errors_total",
			Help: "Failures talking to the API server, by kind.",
		}, []string{"cluster", "kind"}),
		upstreamReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kaccess_upstream_ready",
			Help: "1 when the cluster's API server answered its last readiness probe, else 0.",
		}, []string{"cluster"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaccess_logins_total",
			Help: "Logins (password or ID token exchange) by configured source and outcome: success, or why it failed (invalid_credentials, directory_unavailable, idp_unavailable, ...).",
		}, []string{"source", "outcome"}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.inflight, m.authn, m.upstreamErrors, m.upstreamReady, m.logins,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
