// Package apiserver serves the gateway's API (AuthService for now) over gRPC and, through
// grpc-gateway, as JSON over REST, both on one TLS listener.
//
// Requests take one path whatever their protocol: a REST request is translated by grpc-gateway
// and sent to the same grpc.Server over an in-process connection, so the interceptors that
// authenticate callers, recover panics and log run exactly once for both. gRPC requests are told
// apart from REST ones by HTTP/2 with Content-Type application/grpc.
package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"

	"github.com/kaccess/kaccess/api"
	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/session"
)

// Limits on what a client may send.
const (
	maxHeaderBytes = 1 << 20
	// maxRESTBodyBytes bounds JSON bodies; the API's requests are small.
	maxRESTBodyBytes = 1 << 20
	// maxRecvMsgBytes bounds gRPC messages the same way.
	maxRecvMsgBytes = 1 << 20
	loopbackBuffer  = 256 << 10
)

// SessionStore is what the API needs of internal/session: start sessions and end them. Callers'
// tokens are checked by Config.Authenticator (authn.Sessions over the same session.Manager).
type SessionStore interface {
	Mint(ctx context.Context, in session.Claims) (string, session.Claims, error)
	Revoke(ctx context.Context, sessionID string, until time.Time) error
}

// Source is a configured login source: a directory (Passwords, for Login) or an OpenID
// Connect issuer (IDTokens, for ExchangeToken).
type Source struct {
	// Type says what kind of source it is, e.g. "ldap", "activedirectory", "oidc" (ListSources).
	Type string
	// Passwords checks logins against a directory.
	Passwords authn.PasswordSource
	// IDTokens verifies ID tokens of the source's issuer.
	IDTokens authn.TokenAuthenticator
	// IssuerURL, ClientID and Scopes tell a client where and how to log in (OIDC only).
	IssuerURL string
	ClientID  string
	Scopes    []string
}

// Config configures a Server.
type Config struct {
	// Sessions mints session tokens at login and revokes them at logout.
	Sessions SessionStore
	// Authenticator checks callers' bearer tokens (e.g. authn.Union{authn.Sessions{...}}).
	Authenticator authn.TokenAuthenticator
	// Sources are the login sources by name (the name a client passes to Login).
	Sources map[string]Source
	// Logger receives login/logout events and one line per call; default slog.Default().
	Logger *slog.Logger
	// TLS serves the listener; it must have a certificate (Certificates or GetCertificate).
	TLS *tls.Config
	// Audit records logins, failed logins and logouts; nil records nothing.
	Audit Recorder
	// Access serves AccessService (access requests and grants; an *access.Service, which audits
	// its own changes); nil leaves the service out.
	Access AccessRequests
	// AuditQuery serves AuditService (search, tail, export and counts over the audit store; a
	// *query.Engine); nil leaves the service out.
	AuditQuery AuditSearcher
	// Detections are what AuditService's RunDetections runs; nil offers none.
	Detections Detector
	// Findings are the stored findings of scheduled detections (ListFindings,
	// AcknowledgeFinding); nil keeps none.
	Findings Findings
	// Review serves AccessService's ReviewAccess (the access policy against the audit
	// record); nil leaves it unimplemented.
	Review AccessReviewer
	// AuditorGroups may query everyone's audit events; other callers see only their own.
	AuditorGroups []string
	// OnLogin, if set, is told the outcome of every login attempt that named a configured
	// source (Login and ExchangeToken): "success", or the outcome of its login_failed audit
	// event (invalid_credentials, directory_unavailable, idp_unavailable, ...). The gateway
	// counts them for its metrics.
	OnLogin func(source, outcome string)
}

var sourceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validate reports every problem at once, each with its field path.
func (c *Config) validate() error {
	var errs []error
	add := func(field, msg string) { errs = append(errs, fmt.Errorf("apiserver.%s: %s", field, msg)) }
	if c.Sessions == nil {
		add("sessions", "required")
	}
	if c.Authenticator == nil {
		add("authenticator", "required")
	}
	if c.TLS == nil {
		add("tls", "required: the API is served over TLS only")
	} else if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil {
		add("tls", "has no certificate")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Sources)) {
		src := c.Sources[name]
		if !sourceNameRE.MatchString(name) {
			add(fmt.Sprintf("sources[%q]", name), "name must be 1-63 lowercase letters, digits or '-'")
		}
		if src.Type == "" {
			add(fmt.Sprintf("sources[%q].type", name), "required")
		}
		if (src.Passwords == nil) == (src.IDTokens == nil) {
			add(fmt.Sprintf("sources[%q]", name), "set exactly one of passwords (a directory) and idTokens (an OIDC issuer)")
		}
		if src.IDTokens != nil && (src.IssuerURL == "" || src.ClientID == "") {
			add(fmt.Sprintf("sources[%q]", name), "an OIDC source needs issuerURL and clientID for clients")
		}
	}
	return errors.Join(errs...)
}

// Server is the API server. Create it with New; serve it with Serve, or mount Handler on an
// HTTP/2-capable TLS server of your own.
type Server struct {
	log     *slog.Logger
	tls     *tls.Config
	grpc    *grpc.Server
	health  *health.Server
	rest    http.Handler
	handler http.Handler

	// The in-process connection from grpc-gateway to grpc.
	loop     *bufconn.Listener
	loopConn *grpc.ClientConn

	mu      sync.Mutex
	servers []*http.Server
}

// New builds the server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{log: cfg.Logger, tls: cfg.TLS.Clone(), loop: bufconn.Listen(loopbackBuffer)}
	s.tls.NextProtos = []string{"h2", "http/1.1"}
	if s.tls.MinVersion < tls.VersionTLS12 {
		s.tls.MinVersion = tls.VersionTLS12
	}
	in := &interceptors{authenticator: cfg.Authenticator, log: cfg.Logger, loopback: s.loop.Addr()}
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvMsgBytes),
		// Outermost first: recover, then log (so refusals are logged), then authenticate.
		grpc.ChainUnaryInterceptor(in.recoverUnary, in.logUnary, in.authenticateUnary),
		grpc.ChainStreamInterceptor(in.recoverStream, in.authenticateStream),
	)
	var rec Recorder = discard{}
	if cfg.Audit != nil {
		rec = cfg.Audit
	}
	kaccessv1.RegisterAuthServiceServer(s.grpc, &authService{
		audit: rec, sessions: cfg.Sessions, sources: maps.Clone(cfg.Sources), log: cfg.Logger, names: slices.Sorted(maps.Keys(cfg.Sources)),
		onLogin: cfg.OnLogin,
	})
	if cfg.Access != nil {
		kaccessv1.RegisterAccessServiceServer(s.grpc, &accessService{
			requests: cfg.Access, reviewer: cfg.Review, log: cfg.Logger,
			queries: &auditService{auditors: slices.Clone(cfg.AuditorGroups), audit: rec, log: cfg.Logger},
		})
	}
	if cfg.AuditQuery != nil {
		kaccessv1.RegisterAuditServiceServer(s.grpc, &auditService{
			events: cfg.AuditQuery, detector: cfg.Detections, findings: cfg.Findings, auditors: slices.Clone(cfg.AuditorGroups), audit: rec, log: cfg.Logger,
		})
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus(kaccessv1.AuthService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if cfg.Access != nil {
		s.health.SetServingStatus(kaccessv1.AccessService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	if cfg.AuditQuery != nil {
		s.health.SetServingStatus(kaccessv1.AuditService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(s.grpc)

	go func() { _ = s.grpc.Serve(s.loop) }()
	conn, err := grpc.NewClient("passthrough:///kaccess-apiserver",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.loop.DialContext(ctx) }),
		// In-process, never on a network: no TLS to add.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		s.grpc.Stop()
		return nil, fmt.Errorf("apiserver: loopback connection: %w", err)
	}
	s.loopConn = conn
	gw := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithMetadata(restClientAddress),
		runtime.WithErrorHandler(restErrorHandler),
	)
	if err := kaccessv1.RegisterAuthServiceHandler(context.Background(), gw, conn); err != nil {
		s.Close()
		return nil, fmt.Errorf("apiserver: REST routes: %w", err)
	}
	if cfg.Access != nil {
		if err := kaccessv1.RegisterAccessServiceHandler(context.Background(), gw, conn); err != nil {
			s.Close()
			return nil, fmt.Errorf("apiserver: REST routes: %w", err)
		}
	}
	if cfg.AuditQuery != nil {
		if err := kaccessv1.RegisterAuditServiceHandler(context.Background(), gw, conn); err != nil {
			s.Close()
			return nil, fmt.Errorf("apiserver: REST routes: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.MaxBytesHandler(validUTF8Request(gw), maxRESTBodyBytes))
	mux.HandleFunc("GET /openapi.json", serveOpenAPI)
	s.rest = mux
	s.handler = http.HandlerFunc(s.route)
	return s, nil
}

// route sends gRPC to the grpc.Server and everything else to the REST routes. gRPC is HTTP/2
// only, so an HTTP/1.1 request claiming application/grpc is REST (and will get a 404 there);
// so is gRPC-Web (application/grpc-web), which grpc.Server does not speak.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && isGRPCContentType(r.Header.Get("Content-Type")) {
		s.grpc.ServeHTTP(w, r)
		return
	}
	s.rest.ServeHTTP(w, r)
}

// isGRPCContentType matches "application/grpc" and its codec forms ("application/grpc+proto").
func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// Handler serves gRPC and REST. It needs an HTTP/2 server over TLS for gRPC (see Serve).
func (s *Server) Handler() http.Handler { return s.handler }

// Paths are the path prefixes Handler answers, for mounting it beside other handlers on one
// listener: the REST routes, the OpenAPI document and one "/<service>/" per gRPC service.
func (s *Server) Paths() []string {
	paths := []string{"/v1/", "/openapi.json"}
	for _, svc := range slices.Sorted(maps.Keys(s.grpc.GetServiceInfo())) {
		paths = append(paths, "/"+svc+"/")
	}
	return paths
}

// Serve accepts TLS connections on ln (plain TCP: Serve adds TLS) until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tls,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown reports NOT_SERVING to health checks, stops accepting connections and waits for
// calls in flight until ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	s.mu.Lock()
	servers := slices.Clone(s.servers)
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = srv.Close()
		}
	}
	s.Close()
	return errors.Join(errs...)
}

// Close stops everything at once.
func (s *Server) Close() {
	s.mu.Lock()
	servers := slices.Clone(s.servers)
	s.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Close()
	}
	if s.loopConn != nil {
		_ = s.loopConn.Close()
	}
	s.grpc.Stop()
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(api.OpenAPI)
}
