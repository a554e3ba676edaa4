package apiserver

import (
	"context"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// headerMatcher forwards what grpc-gateway forwards by default, except our own client-address
// key: a REST client must not be able to claim another address ("Grpc-Metadata-X-Kaccess-...").
// grpc-gateway v2.33's default forwards no Grpc-Metadata-* header at all; this keeps our key out
// should a later default (or LegacyHeaderMatcher) forward them again.
func headerMatcher(key string) (string, bool) {
	mdKey, ok := runtime.DefaultHeaderMatcher(key)
	if !ok || strings.TrimPrefix(strings.ToLower(mdKey), runtime.MetadataPrefix) == clientAddressKey {
		return "", false
	}
	return mdKey, true
}

// restClientAddress passes the REST client's address to the interceptors.
func restClientAddress(_ context.Context, r *http.Request) metadata.MD {
	return metadata.Pairs(clientAddressKey, r.RemoteAddr)
}

// restErrorHandler is grpc-gateway's, but with a standard challenge on a 401: grpc-gateway
// puts the status message into WWW-Authenticate, which is not an RFC 6750 challenge.
func restErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if status.Code(err) == codes.Unauthenticated {
		w = &challengeWriter{ResponseWriter: w}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// challengeWriter sets WWW-Authenticate just before the header is written.
type challengeWriter struct{ http.ResponseWriter }

func (c *challengeWriter) WriteHeader(code int) {
	c.Header().Set("WWW-Authenticate", `Bearer realm="kaccess"`)
	c.ResponseWriter.WriteHeader(code)
}

func (c *challengeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// validUTF8Request refuses a REST request whose path or query parameters are not UTF-8 as
// InvalidArgument. grpc-gateway copies them into proto string fields, which must be UTF-8: the
// marshaling of the loopback call fails, and the client got a 500 Internal naming gRPC's
// marshaler for what is its own mistake.
func validUTF8Request(gw *runtime.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := ""
		if !utf8.ValidString(r.URL.Path) {
			bad = "the path"
		}
		for name, values := range r.URL.Query() {
			if bad != "" {
				break
			}
			for _, v := range values {
				if !utf8.ValidString(name) || !utf8.ValidString(v) {
					bad = "query parameter " + strings.ToValidUTF8(name, "\ufffd")
					break
				}
			}
		}
		if bad == "" {
			gw.ServeHTTP(w, r)
			return
		}
		_, out := runtime.MarshalerForRequest(gw, r)
		restErrorHandler(r.Context(), gw, out, w, r, status.Errorf(codes.InvalidArgument, "%s is not valid UTF-8", bad))
	})
}
