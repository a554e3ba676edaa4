// Package proxy forwards an authenticated request to kube-apiserver as the user who made it.
//
// The gateway speaks to the API server with its own credentials and names the user with
// Impersonate-* headers. Everything a client sent that could claim an identity is removed or
// refused first: client-go's impersonating transport would keep a client's own headers, so the
// proxy sets them itself. Streams (watch) are flushed as they come, and connection upgrades
// (exec, attach, port-forward over SPDY or WebSocket) are handed through whole.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/streaming/pkg/httpstream"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/kubestatus"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// Extra keys the gateway adds to every impersonated identity, so the API server's own audit log
// shows where the identity came from. The gateway's ClusterRole allows exactly these.
const (
	ExtraSource       = "kaccess.io/source"
	ExtraSessionHash  = "kaccess.io/session-id-hash" // authn.HashSessionID: never the id itself
	ExtraOriginalUser = "kaccess.io/original-user"
)

// Config is what a Proxy needs for one upstream cluster.
type Config struct {
	// Cluster names the upstream in logs and errors.
	Cluster string
	// Upstream is the API server's URL.
	Upstream *url.URL
	// Transport carries ordinary requests (HTTP/2) with the gateway's own credentials, or
	// without them when SetCredentials adds them to each outgoing request.
	Transport      http.RoundTripper
	SetCredentials func(h http.Header)
	// UpgradeTransport carries connection upgrades; it must speak HTTP/1.1, because SPDY and
	// WebSocket upgrades do not exist in HTTP/2.
	UpgradeTransport http.RoundTripper
	// Impersonation decides kubectl --as requests.
	Impersonation ImpersonationChecker
	// TrustedProxies are peers whose X-Forwarded-For is kept.
	TrustedProxies []netip.Prefix
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// MaxHeaderBytes bounds the URL and headers as HTTP/2 counts them (32 bytes a field more
	// than name and value). The client's listener lets a little more through than its limit
	// says, and the API server would refuse the rest only after the request left.
	MaxHeaderBytes int
	// Logger, and OnUpstreamError counting failures by kind ("unreachable", "timeout", ...).
	Logger          *slog.Logger
	OnUpstreamError func(kind string)
}

// Proxy is an http.Handler forwarding to one cluster.
type Proxy struct {
	cfg      Config
	ordinary *httputil.ReverseProxy
	upgrade  *httputil.ReverseProxy
}

// New checks cfg and builds the proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Upstream == nil || cfg.Transport == nil || cfg.UpgradeTransport == nil || cfg.Impersonation == nil {
		return nil, errors.New("proxy: Upstream, Transport, UpgradeTransport and Impersonation are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnUpstreamError == nil {
		cfg.OnUpstreamError = func(string) {}
	}
	p := &Proxy{cfg: cfg}
	buffers := newBufferPool()
	p.ordinary = p.reverseProxy(cfg.Transport, buffers)
	p.ordinary.Rewrite = p.rewriteWithCredentials
	p.upgrade = p.reverseProxy(cfg.UpgradeTransport, buffers)
	return p, nil
}

func (p *Proxy) reverseProxy(rt http.RoundTripper, buffers httputil.BufferPool) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:    p.rewrite,
		Transport:  rt,
		BufferPool: buffers,
		// No periodic flushing: ReverseProxy flushes every write of a streaming response (a
		// watch, a followed log: no Content-Length) at once by itself, and batching the writes
		// of ordinary responses saves a TLS record and a syscall each. The watch test holds
		// this to account.
		FlushInterval: 0,
		ErrorHandler:  p.upstreamError,
		ErrorLog:      slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelWarn),
	}
}

// forward carries, from ServeHTTP to rewrite, the identity headers decided for the request.
type forward struct {
	header http.Header
	body   *bodyReadError
}

// bodyReadError remembers why reading the client's body failed, if it did: the upstream
// transport reads it on its own goroutine and reports only that the request broke.
type bodyReadError struct {
	io.ReadCloser
	mu  sync.Mutex
	err error
}

func (b *bodyReadError) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyReadError) failed() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

type forwardKey struct{}

// ServeHTTP authorizes any impersonation the client asked for, then forwards the request.
// It expects the authentication step to have put the identity in the context and removed the
// client's credential.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := authn.IdentityFrom(r.Context())
	if !ok {
		// Fail closed: a wiring mistake must never forward as the gateway itself.
		requestctx.Refuse(r.Context(), requestctx.RefusedUnauthenticated)
		kubestatus.Unauthorized(w, "Unauthorized")
		return
	}
	if len(r.Header.Values("Authorization")) > 0 {
		requestctx.Refuse(r.Context(), requestctx.RefusedIdentityHeader, identityHeaderNames(r.Header)...)
		kubestatus.BadRequest(w, "a credential is left on the request; send exactly one Authorization header")
		return
	}
	asked, err := takeClientIdentityHeaders(r.Header)
	if err != nil {
		requestctx.Refuse(r.Context(), requestctx.RefusedIdentityHeader, identityHeaderNames(r.Header)...)
		p.cfg.Logger.WarnContext(r.Context(), "refused identity header", "user", id.User, "reason", err.Error())
		kubestatus.BadRequest(w, err.Error())
		return
	}
	if slices.Contains(id.Groups, "system:masters") {
		// No login source may hand out the API server's break-glass group through the gateway.
		requestctx.Refuse(r.Context(), requestctx.RefusedPrivilegedGroup)
		kubestatus.Forbidden(w, "the gateway never forwards membership of system:masters")
		return
	}
	out := http.Header{}
	extra := map[string][]string{}
	for k, v := range id.Extra {
		extra[k] = v
	}
	if id.Source != "" {
		extra[ExtraSource] = []string{id.Source}
	}
	if id.SessionID != "" {
		extra[ExtraSessionHash] = []string{authn.HashSessionID(id.SessionID)}
	}
	if asked == nil {
		setImpersonation(out, id.User, id.UID, id.Groups, extra)
	} else {
		if st := requestctx.From(r.Context()); st != nil {
			st.ImpersonatedUser, st.ImpersonatedGroups = asked.User, asked.Groups
		}
		allowed, refusal, err := p.cfg.Impersonation.CheckImpersonation(r.Context(), id, asked)
		if err != nil {
			p.cfg.Logger.ErrorContext(r.Context(), "impersonation check failed", "user", id.User, "error", err.Error())
			p.cfg.OnUpstreamError("impersonation_check")
			requestctx.Refuse(r.Context(), requestctx.RefusedUpstreamUnavailable)
			kubestatus.Write(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the gateway could not check the impersonation with the API server; try again")
			return
		}
		if !allowed {
			p.cfg.Logger.WarnContext(r.Context(), "impersonation refused", "user", id.User, "as_user", asked.User, "as_groups", asked.Groups)
			requestctx.Refuse(r.Context(), requestctx.RefusedImpersonation)
			kubestatus.Forbidden(w, refusal)
			return
		}
		for k, v := range asked.Extra {
			extra[k] = v
		}
		// Keep the real user visible in the API server's audit log.
		extra[ExtraOriginalUser] = []string{id.User}
		setImpersonation(out, asked.User, asked.UID, asked.Groups, extra)
	}
	if r.ContentLength > p.cfg.MaxBodyBytes && p.cfg.MaxBodyBytes > 0 {
		requestctx.Refuse(r.Context(), requestctx.RefusedTooLarge)
		kubestatus.Write(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("request body of %d bytes is over the gateway's limit of %d bytes", r.ContentLength, p.cfg.MaxBodyBytes))
		return
	}
	if n := headerListSize(r); p.cfg.MaxHeaderBytes > 0 && n > p.cfg.MaxHeaderBytes {
		requestctx.Refuse(r.Context(), requestctx.RefusedTooLarge)
		kubestatus.Write(w, http.StatusRequestHeaderFieldsTooLarge, "RequestHeaderFieldsTooLarge",
			fmt.Sprintf("URL and headers of %d bytes are over the gateway's limit of %d bytes", n, p.cfg.MaxHeaderBytes))
		return
	}
	var body *bodyReadError
	if r.Body != nil && r.Body != http.NoBody {
		if p.cfg.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, p.cfg.MaxBodyBytes)
		}
		body = &bodyReadError{ReadCloser: r.Body}
		r.Body = body
	}
	r = r.WithContext(context.WithValue(r.Context(), forwardKey{}, forward{header: out, body: body}))
	if httpstream.IsUpgradeRequest(r) {
		p.upgrade.ServeHTTP(w, r)
		return
	}
	p.ordinary.ServeHTTP(w, r)
}

// headerListSize is what the request's URL and headers weigh in HTTP/2's terms (RFC 9113
// section 6.5.2), which is how the upstream transport and the API server count them.
func headerListSize(r *http.Request) int {
	n := len(r.URL.RequestURI()) + len(r.Method) + len(r.Host) + 4*32
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 32
		}
	}
	return n
}

// rewrite builds the upstream request. ReverseProxy has already dropped hop-by-hop headers and
// any X-Forwarded-* the client sent.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.cfg.Upstream)
	// From here the answer is the API server's, unless upstreamError says otherwise.
	if st := requestctx.From(pr.In.Context()); st != nil {
		st.Forwarded = true
	}
	pr.Out.Host = p.cfg.Upstream.Host
	// ServeHTTP already removed or refused every identity header of the client; only the
	// identity it decided is added here.
	h := pr.Out.Header
	if fwd, ok := pr.In.Context().Value(forwardKey{}).(forward); ok {
		for k, v := range fwd.header {
			h[k] = v
		}
	}
	// The request id becomes the API server's audit ID, so both audit trails join up; a
	// client-chosen Audit-ID is never passed on.
	if id := requestctx.RequestID(pr.In.Context()); id != "" {
		h.Set("Audit-Id", id)
		h.Set("X-Request-Id", id)
	} else {
		h.Del("Audit-Id")
	}
	p.setForwardedFor(pr)
}

// rewriteWithCredentials is rewrite for the ordinary transport, adding the gateway's own
// credential when the transport does not (Config.SetCredentials).
func (p *Proxy) rewriteWithCredentials(pr *httputil.ProxyRequest) {
	p.rewrite(pr)
	if p.cfg.SetCredentials != nil {
		p.cfg.SetCredentials(pr.Out.Header)
	}
}

// setForwardedFor tells the API server the client's address. An inbound X-Forwarded-For is kept
// only from a trusted load balancer; from anyone else it could be forged.
func (p *Proxy) setForwardedFor(pr *httputil.ProxyRequest) {
	host, _, err := net.SplitHostPort(pr.In.RemoteAddr)
	if err != nil {
		return
	}
	prior := pr.In.Header.Values("X-Forwarded-For")
	if len(prior) > 0 && p.trusted(host) {
		pr.Out.Header.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+host)
		return
	}
	pr.Out.Header.Set("X-Forwarded-For", host)
}

func (p *Proxy) trusted(host string) bool {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, pfx := range p.cfg.TrustedProxies {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// pastDeadline reports whether ctx's deadline (timeouts.request) has passed.
func pastDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// upstreamError answers for an API server that could not be reached or did not answer in time.
// The detail goes to the log; the client gets a short, safe message.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	fwd, _ := r.Context().Value(forwardKey{}).(forward)
	bodyErr := fwd.body.failed()
	switch {
	case errors.As(err, &tooBig) || errors.As(bodyErr, &tooBig):
		requestctx.Refuse(r.Context(), requestctx.RefusedTooLarge)
		kubestatus.Write(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("request body is over the gateway's limit of %d bytes", tooBig.Limit))
		return
	case errors.Is(bodyErr, os.ErrDeadlineExceeded) || (r.ContentLength != 0 && errors.Is(err, context.Canceled) && pastDeadline(r.Context())):
		// The body stalled until timeouts.request. Checked before the client's going away: on
		// HTTP/1.1 the read deadline cancels the request's context too, and on a busy machine
		// that cancel can reach the transport before the body read reports its deadline.
		p.cfg.OnUpstreamError("timeout")
		requestctx.Refuse(r.Context(), requestctx.FailedUpstreamTimeout)
		kubestatus.Write(w, http.StatusGatewayTimeout, "Timeout", "the request body did not arrive within the gateway's request timeout")
		return
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nothing to answer.
		requestctx.Refuse(r.Context(), requestctx.FailedClientClosed)
		w.WriteHeader(499)
		return
	case errors.Is(err, context.DeadlineExceeded):
		p.cfg.OnUpstreamError("timeout")
		requestctx.Refuse(r.Context(), requestctx.FailedUpstreamTimeout)
		p.cfg.Logger.WarnContext(r.Context(), "upstream timeout", "cluster", p.cfg.Cluster, "error", err.Error())
		kubestatus.Write(w, http.StatusGatewayTimeout, "Timeout", "the API server did not answer in time; try again or raise timeouts.request")
		return
	}
	if bodyErr != nil {
		// The client's body broke off or was malformed (a bad chunk): the API server never got a
		// whole request. A body that stalled until timeouts.request is the timeout above.
		p.cfg.Logger.InfoContext(r.Context(), "request body could not be read", "error", bodyErr.Error())
		requestctx.Refuse(r.Context(), requestctx.RefusedBadRequest)
		w.Header().Set("Connection", "close")
		kubestatus.BadRequest(w, "the request body could not be read: it was malformed or cut off")
		return
	}
	p.cfg.OnUpstreamError("unreachable")
	// A failed dial sent nothing; a connection that broke later may have delivered the request.
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		requestctx.Refuse(r.Context(), requestctx.RefusedUpstreamUnavailable)
	} else {
		requestctx.Refuse(r.Context(), requestctx.FailedUpstream)
	}
	p.cfg.Logger.ErrorContext(r.Context(), "upstream error", "cluster", p.cfg.Cluster, "error", err.Error())
	kubestatus.Write(w, http.StatusBadGateway, "ServiceUnavailable",
		fmt.Sprintf("the gateway could not reach the API server of cluster %q; try again shortly", p.cfg.Cluster))
}
