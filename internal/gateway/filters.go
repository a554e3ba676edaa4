package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/sets"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/kubestatus"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// withFramingChecks guards the HTTP/1.1 listener against request smuggling the server itself
// lets pass. net/http accepts a request with both Content-Length and Transfer-Encoding:
// chunked (it drops Content-Length and reads the chunks) and keeps the connection, so the
// bytes after the chunked body are read as the next request; RFC 9112 (section 6.1) asks a
// server to close the connection after such a request. The handler cannot see that
// Content-Length was there, so every HTTP/1.1 request with a chunked body ends its
// connection (kubectl sends Content-Length, and speaks HTTP/2).
func withFramingChecks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// withRecover answers 500 instead of dropping the connection when a handler panics.
// http.ErrAbortHandler is how ReverseProxy ends a response it cannot finish; let it through.
func withRecover(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(r.Context(), "panic serving request", "panic", v)
				kubestatus.Write(w, http.StatusInternalServerError, "InternalError", "internal error in the gateway")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// withRequestID gives every request an id of the gateway's own (a client's is not trusted: it
// becomes the API server's audit ID) and returns it to the client.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		state := &requestctx.State{ID: uuid.Must(uuid.NewV7()).String()}
		w.Header().Set("X-Request-Id", state.ID)
		next.ServeHTTP(w, r.WithContext(requestctx.WithState(r.Context(), state)))
	})
}

var requestInfoFactory = &genericrequest.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

// withRequestInfo parses the Kubernetes verb, resource and names from the URL, as the API
// server does, for metrics, logs, timeouts, audit and grants. A path it cannot parse keeps
// what could be read and is refused inside audit capture (withParsableRequest), so the
// refusal is on the record too.
func withRequestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := requestInfoFactory.NewRequestInfo(r)
		ctx := r.Context()
		if err != nil {
			ctx = context.WithValue(ctx, unparsableKey{}, true)
		}
		if info == nil {
			info = &genericrequest.RequestInfo{Path: r.URL.Path, Verb: strings.ToLower(r.Method)}
		}
		ctx = genericrequest.WithRequestInfo(ctx, info)
		if st := requestctx.From(ctx); st != nil {
			st.LongRunning = isLongRunning(r, info)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

type unparsableKey struct{}

// withParsableRequest refuses the requests whose path withRequestInfo could not parse.
func withParsableRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bad, _ := r.Context().Value(unparsableKey{}).(bool); bad {
			requestctx.Refuse(r.Context(), requestctx.RefusedBadRequest)
			kubestatus.BadRequest(w, "cannot parse the request path as a Kubernetes API request")
			return
		}
		next.ServeHTTP(w, r)
	})
}

var longRunningSubresources = sets.New("exec", "attach", "portforward", "proxy")

// isLongRunning reports requests that may stream for hours: they get no request timeout.
func isLongRunning(r *http.Request, info *genericrequest.RequestInfo) bool {
	if httpstream.IsUpgradeRequest(r) {
		return true
	}
	if info.Verb == "watch" || longRunningSubresources.Has(info.Subresource) {
		return true
	}
	return info.Subresource == "log" && r.URL.Query().Get("follow") == "true"
}

// withTimeout bounds ordinary requests; long-running ones end when a side closes or at shutdown.
func withTimeout(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := requestctx.From(r.Context()); d <= 0 || (st != nil && st.LongRunning) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		// The context alone does not bound a body the client stops sending: the upstream
		// transport's read of it blocks, and net/http then holds the answer (and the
		// connection) until the client sends more. A read deadline ends that read too.
		// Not every writer supports it (ErrNotSupported): the context still applies.
		// Without a body (ContentLength 0: net/http and its HTTP/2 server allow no bytes then)
		// there is nothing to bound, and on HTTP/2 the deadline costs a round trip through the
		// connection's serve goroutine and a timer on every GET.
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// withAuthentication takes the bearer credential off the request, so it never goes upstream,
// and refuses the request with 401 unless a source recognises it.
func withAuthentication(next http.Handler, a authn.TokenAuthenticator, m *metrics, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		sent := r.Header.Values("Authorization") // kept for attributing a refusal; no copy
		token, err := authn.TakeBearerToken(r)
		if err != nil {
			m.authn.WithLabelValues("", authn.FailureReason(err)).Inc()
			log.InfoContext(ctx, "authentication refused", "reason", err.Error())
			if errors.Is(err, authn.ErrMultipleCredential) {
				requestctx.Refuse(ctx, requestctx.RefusedIdentityHeader, "Authorization")
				if id := attribute(ctx, a, sent); id != nil {
					if st := requestctx.From(ctx); st != nil {
						st.User, st.Source, st.Identity = id.User, id.Source, id
					}
				}
				kubestatus.BadRequest(w, err.Error())
				return
			}
			requestctx.Refuse(ctx, requestctx.RefusedUnauthenticated)
			kubestatus.Unauthorized(w, err.Error())
			return
		}
		id, ok, err := a.AuthenticateToken(ctx, token)
		if err != nil || !ok {
			if err == nil {
				err = authn.ErrUnrecognized
			}
			m.authn.WithLabelValues("", authn.FailureReason(err)).Inc()
			log.InfoContext(ctx, "authentication refused", "reason", err.Error())
			requestctx.Refuse(ctx, requestctx.RefusedUnauthenticated)
			kubestatus.Unauthorized(w, "Unauthorized: "+authn.ClientMessage(err))
			return
		}
		m.authn.WithLabelValues(id.Source, "success").Inc()
		if st := requestctx.From(ctx); st != nil {
			st.User, st.Source, st.Identity = id.User, id.Source, id
		}
		next.ServeHTTP(w, r.WithContext(authn.WithIdentity(ctx, id)))
	})
}

// attribute names, for the audit record only, who sent a request refused for carrying more
// than one credential: the first that is a valid gateway credential. The request stays
// refused; a smuggled second credential must not hide the sender from the security team.
func attribute(ctx context.Context, a authn.TokenAuthenticator, sent []string) *authn.Identity {
	for _, v := range sent[:min(len(sent), 4)] {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			continue
		}
		if id, ok, err := a.AuthenticateToken(ctx, strings.TrimSpace(token)); err == nil && ok {
			return id
		}
	}
	return nil
}

// statusRecorder remembers the code and size of a response. Unwrap lets http.ResponseController
// reach the real writer for Flush (watch) and Hijack (upgrades).
type statusRecorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// withObservability counts and logs each request once it ends, with who made it.
func withObservability(next http.Handler, cluster string, m *metrics, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		long := false
		if st := requestctx.From(r.Context()); st != nil {
			long = st.LongRunning
		}
		inflight := m.inflight.WithLabelValues(cluster, strconv.FormatBool(long))
		inflight.Inc()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			inflight.Dec()
			elapsed := time.Since(start)
			code := rec.code
			if code == 0 {
				code = http.StatusSwitchingProtocols // hijacked without a WriteHeader through us
			}
			verb, resource := r.Method, ""
			info, _ := genericrequest.RequestInfoFrom(r.Context())
			if info != nil {
				verb, resource = info.Verb, info.Resource
				if info.Subresource != "" {
					resource += "/" + info.Subresource
				}
			}
			m.requests.WithLabelValues(cluster, verb, resource, strconv.Itoa(code)).Inc()
			if !long {
				m.latency.WithLabelValues(cluster, verb, resource).Observe(elapsed.Seconds())
			}
			if !log.Enabled(r.Context(), slog.LevelInfo) {
				return
			}
			attrs := make([]slog.Attr, 0, 16)
			attrs = append(attrs, slog.String("cluster", cluster), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("code", code),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.Int64("bytes_out", rec.bytes), slog.String("remote", r.RemoteAddr))
			if info != nil {
				attrs = append(attrs, slog.String("verb", info.Verb), slog.String("resource", resource),
					slog.String("namespace", info.Namespace), slog.String("name", info.Name))
			}
			if st := requestctx.From(r.Context()); st != nil && st.User != "" {
				attrs = append(attrs, slog.String("user", st.User), slog.String("source", st.Source))
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		}()
		next.ServeHTTP(rec, r)
	})
}
