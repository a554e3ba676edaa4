// Package gateway assembles kaccess' server from the feature packages: configuration, TLS,
// session tokens, authentication, the impersonating proxy, health and metrics.
package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/authn/oidc"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/kubestatus"
	"github.com/kaccess/kaccess/internal/proxy"
	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/revocation"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/tlsutil"
	"github.com/kaccess/kaccess/internal/upstream"
)

// Version is stamped at build time.
var Version = "dev"

// Gateway is a configured, not yet serving, gateway.
type Gateway struct {
	cfg         *config.Config
	log         *slog.Logger
	metrics     *metrics
	sessions    *session.Manager
	revocations *revocation.ConfigMapStore // nil when revocations stay in memory
	api         *apiserver.Server
	audit       *audit
	access      *governance
	findings    *scheduledFindings
	clusters    []*upstream.Cluster
	handler     http.Handler
	tls         *tls.Config
	leaseTiming leaseTiming
	// CAPEM is the CA clients must trust: the generated one, or nil with an operator certificate.
	CAPEM []byte

	// background lives as long as the gateway: watches (revocations) run under it.
	background     context.Context
	stopBackground context.CancelFunc

	draining atomic.Bool
	mu       sync.Mutex
	proxyLn  net.Listener
	opsLn    net.Listener
}

// Option changes how New builds the gateway.
type Option func(*options)

type options struct {
	sources     map[string]apiserver.Source
	auditStore  StoreOpener
	leaseTiming leaseTiming
}

// WithPasswordSource adds a login source beside the configured directories (tests, embedding).
func WithPasswordSource(name string, src apiserver.Source) Option {
	return func(o *options) { o.sources[name] = src }
}

// New builds the gateway from a validated configuration.
func New(cfg *config.Config, log *slog.Logger, opts ...Option) (*Gateway, error) {
	o := options{sources: map[string]apiserver.Source{}}
	for _, opt := range opts {
		opt(&o)
	}
	sources := o.sources
	// One limiter for all directories: a guesser moving between sources is still slowed down.
	limiter := authn.NewFailureLimiter(authn.FailureLimiterConfig{})
	for _, d := range cfg.Directories {
		src, err := ldap.New(d, ldap.Options{Limiter: limiter})
		if err != nil {
			return nil, err
		}
		sources[d.Name] = apiserver.Source{Type: d.Type, Passwords: src}
	}
	g := &Gateway{cfg: cfg, log: log, metrics: newMetrics(), leaseTiming: o.leaseTiming}
	g.background, g.stopBackground = context.WithCancel(context.Background())
	if err := g.setupTLS(); err != nil {
		return nil, err
	}
	var trusted []netip.Prefix
	for _, c := range cfg.TrustedProxies {
		trusted = append(trusted, netip.MustParsePrefix(c))
	}
	for _, cc := range cfg.Clusters {
		cl, err := upstream.Connect(cc, cfg.Timeouts.UpstreamDial.D(), "kaccess-gateway/"+Version)
		if err != nil {
			return nil, err
		}
		g.clusters = append(g.clusters, cl)
	}
	var revocations session.RevocationStore
	if r := cfg.Session.Revocations; r != "" {
		ns, name, _ := strings.Cut(r, "/")
		store, err := revocation.NewConfigMapStore(g.background, g.defaultCluster().Client, ns, name, log)
		if err != nil {
			g.stopBackground()
			return nil, err
		}
		revocations, g.revocations = store, store
	}
	sessions, err := session.NewManager(session.Config{
		Issuer: cfg.Session.Issuer, KeysDir: cfg.Session.KeysDir, TTL: cfg.Session.TTL.D(),
		RotateEvery: cfg.Session.RotateEvery.D(), Revocations: revocations, Logger: log,
	})
	if err != nil {
		g.stopBackground()
		return nil, err
	}
	g.sessions = sessions
	authenticator := authn.Union{authn.Sessions{Verifier: sessions}}
	if len(cfg.OIDC) > 0 {
		// ID tokens of the configured issuers are accepted on the proxy as they are (kubectl
		// with an OIDC plugin), and exchanged for sessions by `kaccess login`.
		idTokens, err := oidc.New(g.background, cfg.OIDC, oidc.Options{Logger: log})
		if err != nil {
			g.stopBackground()
			return nil, err
		}
		authenticator = append(authenticator, idTokens)
		for _, oc := range cfg.OIDC {
			sources[oc.Name] = apiserver.Source{
				Type: "oidc", IDTokens: onlySource(idTokens, oc.Source()),
				IssuerURL: oc.IssuerURL, ClientID: oc.ClientIDs[0],
				Scopes: []string{"openid", "profile", "email", "offline_access"},
			}
		}
	}

	if err := g.setupAudit(o.auditStore, trusted); err != nil {
		g.stopBackground()
		return nil, err
	}
	if !cfg.Audit.RecordsRequests() {
		log.Warn("AUDIT OF REQUESTS IS OFF (audit.recordRequests: false): requests through the proxy are NOT recorded; " +
			"this setting exists to measure what recording costs and must not be used in production")
	}
	if err := g.setupAccess(); err != nil {
		g.stopBackground()
		return nil, err
	}
	g.metrics.initKnown(cfg, sources)
	if err := g.setupFindings(); err != nil {
		g.stopBackground()
		return nil, err
	}
	mux := http.NewServeMux()
	for i, cc := range cfg.Clusters {
		cl := g.clusters[i]
		errs := g.metrics.upstreamErrors
		name := cl.Name
		p, err := proxy.New(proxy.Config{
			Cluster: name, Upstream: cl.URL, Transport: cl.ProxyTransport, UpgradeTransport: cl.UpgradeTransport,
			SetCredentials: cl.SetCredentials,
			Impersonation:  proxy.NewSARChecker(cl.Client.AuthorizationV1().SubjectAccessReviews(), 10*time.Second),
			TrustedProxies: trusted, MaxBodyBytes: cfg.Limits.MaxBodyBytes,
			MaxHeaderBytes: cfg.Limits.MaxHeaderBytes, Logger: log,
			OnUpstreamError: func(kind string) { errs.WithLabelValues(name, kind).Inc() },
		})
		if err != nil {
			return nil, err
		}
		chain := g.buildHandlerChain(name, p, authenticator, cc.Default)
		prefix := "/clusters/" + name
		mux.Handle(prefix+"/", http.StripPrefix(prefix, chain))
		if cc.Default {
			mux.Handle("/", chain)
		}
	}
	// Searches, detections and access reviews read the store the shipper writes.
	events := &query.Engine{Querier: g.audit.store, Database: g.auditDatabase()}
	apiCfg := apiserver.Config{
		Sessions: sessions, Authenticator: authenticator, Sources: sources, Logger: log, TLS: g.tls,
		Audit:         g.audit.capture,
		AuditQuery:    events,
		Detections:    detections{q: g.audit.store},
		AuditorGroups: cfg.Audit.AuditorGroups,
		Findings:      g.findings,
		OnLogin:       func(source, outcome string) { g.metrics.logins.WithLabelValues(source, outcome).Inc() },
	}
	if g.access != nil {
		apiCfg.Access = g.access.service
		apiCfg.Review = &accessReviewer{
			policy: g.access.policy, usage: events,
			cluster: g.defaultCluster().Name, kube: g.defaultCluster().Client,
		}
	}
	api, err := apiserver.New(apiCfg)
	if err != nil {
		return nil, err
	}
	g.api = api
	// The API shares the proxy's listener, so people need one URL and one CA. Its paths
	// (/v1/, /openapi.json, /<grpc service>/) are none of the Kubernetes API's.
	for _, path := range api.Paths() {
		mux.Handle(path, api.Handler())
	}
	// The API servers' own audit events, so requests around the gateway are on record too.
	if err := g.mountAuditWebhooks(mux); err != nil {
		return nil, err
	}
	// Unknown cluster names end here rather than at the default cluster, which would answer
	// with a confusing 403 for a path it does not have.
	mux.HandleFunc("/clusters/{name}/", func(w http.ResponseWriter, r *http.Request) {
		kubestatus.Write(w, http.StatusNotFound, "NotFound",
			fmt.Sprintf("no cluster named %q behind this gateway; check the server URL in your kubeconfig", r.PathValue("name")))
	})
	// Outside the mux, so its own answers (redirects of unclean paths) are covered too.
	g.handler = withFramingChecks(mux)
	return g, nil
}

// buildHandlerChain wraps the proxy in the steps every request passes, outermost first.
func (g *Gateway) buildHandlerChain(cluster string, p http.Handler, a authn.TokenAuthenticator, isDefault bool) http.Handler {
	h := p
	// Access grants in force add their groups, on the clusters each grant covers only.
	if g.access != nil {
		h = withGrants(h, g.access.grants, cluster, isDefault)
	}
	// Ordinary requests are bounded in time; watches and upgrades are not. Inside
	// authentication so a slow token check does not eat the upstream's time.
	h = withTimeout(h, g.cfg.Timeouts.Request.D())
	// Authenticate, removing the credential from the request; 401 for anything not valid.
	h = withAuthentication(h, a, g.metrics, g.log)
	// A path the request info step could not parse is refused here, inside capture.
	h = withParsableRequest(h)
	// Record every request, refused credentials included, before its response completes;
	// 503 up front when the audit spool cannot take more. (Left out only with
	// audit.recordRequests: false, which New warns about.)
	if g.cfg.Audit.RecordsRequests() {
		h = g.audit.capture.Handler(cluster, h)
	}
	// Count and log every request once it ends, including refusals by the steps inside.
	h = withObservability(h, cluster, g.metrics, g.log)
	// Know the Kubernetes verb and resource before anything below needs them.
	h = withRequestInfo(h)
	// A panic anywhere inside becomes a 500 with the request id in the log.
	h = withRecover(h, g.log)
	// First: every line logged and every upstream call carries the request id.
	h = withRequestID(h)
	return h
}

func (g *Gateway) setupTLS() error {
	certFile, keyFile := g.cfg.TLS.CertFile, g.cfg.TLS.KeyFile
	if certFile == "" {
		var err error
		certFile, keyFile, g.CAPEM, err = tlsutil.EnsureSelfSigned(filepath.Join(g.cfg.StateDir, "tls"), g.cfg.TLS.Hosts, time.Now())
		if err != nil {
			return fmt.Errorf("self-signed certificate: %w", err)
		}
	}
	reloader, err := tlsutil.NewReloader(certFile, keyFile, func(err error) {
		g.log.Error("TLS certificate reload failed; serving the previous one", "error", err.Error())
	})
	if err != nil {
		return err
	}
	g.metrics.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kaccess_tls_certificate_expiry_timestamp_seconds",
		Help: "Unix time the serving certificate the gateway presents now expires (a renewed file is picked up).",
	}, func() float64 { return float64(reloader.NotAfter().Unix()) }))
	g.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: reloader.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	return nil
}

// onlySource narrows a multi-issuer authenticator to one source, so ExchangeToken for source A
// never accepts an ID token of source B's issuer.
func onlySource(a authn.TokenAuthenticator, source string) authn.TokenAuthenticator {
	return authn.TokenFunc(func(ctx context.Context, token string) (*authn.Identity, bool, error) {
		id, ok, err := a.AuthenticateToken(ctx, token)
		if err != nil || !ok || id.Source != source {
			return nil, false, err
		}
		return id, true, nil
	})
}

func (g *Gateway) defaultCluster() *upstream.Cluster {
	for i, cc := range g.cfg.Clusters {
		if cc.Default {
			return g.clusters[i]
		}
	}
	return g.clusters[0]
}

// Sessions gives access to session tokens (logins mint them; tests too).
func (g *Gateway) Sessions() *session.Manager { return g.sessions }

// Handler is the proxy listener's handler, for tests that serve it themselves.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Listen binds both listeners, so callers (and tests) learn the real addresses before Serve.
func (g *Gateway) Listen() error {
	ln, err := net.Listen("tcp", g.cfg.Listen.Address)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", g.cfg.Listen.Address, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.proxyLn = ln
	if g.cfg.Listen.OpsAddress != "" {
		ops, err := net.Listen("tcp", g.cfg.Listen.OpsAddress)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", g.cfg.Listen.OpsAddress, err)
		}
		g.opsLn = ops
	}
	return nil
}

// Addr is the proxy listener's address (after Listen).
func (g *Gateway) Addr() string { return g.proxyLn.Addr().String() }

// OpsAddr is the operations listener's address (after Listen), or "".
func (g *Gateway) OpsAddr() string {
	if g.opsLn == nil {
		return ""
	}
	return g.opsLn.Addr().String()
}

// Run serves until ctx ends, then drains: /readyz turns 503 so load balancers stop sending,
// in-flight requests get timeouts.shutdownDrain to finish, and long-running streams are then cut.
func (g *Gateway) Run(ctx context.Context) error {
	if g.proxyLn == nil {
		if err := g.Listen(); err != nil {
			return err
		}
	}
	// Long-running requests derive from this context, so shutdown can end them.
	streams, cutStreams := context.WithCancel(context.Background())
	defer cutStreams()
	srv := &http.Server{
		Handler:           g.handler,
		TLSConfig:         g.tls,
		MaxHeaderBytes:    g.cfg.Limits.MaxHeaderBytes,
		ReadHeaderTimeout: g.cfg.Timeouts.ReadHeader.D(),
		IdleTimeout:       g.cfg.Timeouts.Idle.D(),
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return streams },
	}
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(g.proxyLn, "", "") }()
	if g.opsLn != nil {
		ops := &http.Server{Handler: g.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, ops)
		go func() { errc <- ops.Serve(g.opsLn) }()
	}
	probes, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	for _, cl := range g.clusters {
		go cl.ProbeEvery(probes, 5*time.Second)
	}
	go g.exportReadiness(probes)
	waitAccess := g.runAccess(probes)
	waitFindings := g.runFindings(probes, rbacsync.DefaultIdentity())
	// The shipper outlives the drain, so records of the last requests go out too; whatever
	// it has not shipped at exit stays in the spool for the next start.
	shipping, stopShipping := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() { defer close(shipped); g.runShipper(shipping) }()
	defer func() { stopShipping(); <-shipped; g.closeAudit() }()
	if g.cfg.Session.RotateEvery > 0 {
		go func() { _ = g.sessions.Run(probes) }()
	}
	g.log.Info("gateway serving", "address", g.Addr(), "ops_address", g.OpsAddr(), "version", Version)
	if g.cfg.Listen.Pprof && g.opsLn != nil {
		g.log.Warn("Go profiles are served without authentication on the ops listener (listen.pprof)", "url", "http://"+g.OpsAddr()+"/debug/pprof/")
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	g.draining.Store(true)
	g.log.Info("draining", "timeout", g.cfg.Timeouts.ShutdownDrain.D().String())
	drain, cancel := context.WithTimeout(context.Background(), g.cfg.Timeouts.ShutdownDrain.D())
	defer cancel()
	err := srv.Shutdown(drain)
	cutStreams()
	if err != nil {
		g.log.Warn("drain timed out; closing remaining connections", "error", err.Error())
		_ = srv.Close()
	}
	for _, s := range servers[1:] {
		_ = s.Close()
	}
	g.api.Close()
	stopProbes()
	waitAccess()
	waitFindings()
	g.stopBackground()
	g.log.Info("stopped")
	return nil
}

func (g *Gateway) exportReadiness(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for _, cl := range g.clusters {
			ok, _ := cl.Ready()
			v := 0.0
			if ok {
				v = 1
			}
			g.metrics.upstreamReady.WithLabelValues(cl.Name).Set(v)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// opsHandler serves liveness, readiness and metrics. Readiness means every upstream answered
// its last probe and the gateway is not draining.
func (g *Gateway) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		var problems []string
		if g.draining.Load() {
			problems = append(problems, "shutting down")
		}
		if g.revocations != nil && !g.revocations.Loaded() {
			problems = append(problems, "revocation list not loaded yet: sessions are refused until its API server answers")
		}
		if g.auditFull() {
			problems = append(problems, "audit spool full: requests are refused until the audit store takes records again")
		}
		for _, cl := range g.clusters {
			if ok, why := cl.Ready(); !ok {
				problems = append(problems, fmt.Sprintf("cluster %s: %s", cl.Name, why))
			}
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(problems, "; "))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{}))
	if g.cfg.Listen.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
