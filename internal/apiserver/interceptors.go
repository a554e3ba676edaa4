package apiserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/authn"
)

// clientAddressKey carries a REST client's address from grpc-gateway to the interceptors. It is
// believed only on the in-process connection, and REST clients cannot set it (headerMatcher).
const clientAddressKey = "x-kaccess-client-address"

// publicMethods need no credential: a person logs in with them. Everything else does (fail
// closed: a method added later is authenticated unless it is listed here).
var publicMethods = map[string]bool{
	kaccessv1.AuthService_Login_FullMethodName:         true,
	kaccessv1.AuthService_ListSources_FullMethodName:   true,
	kaccessv1.AuthService_ExchangeToken_FullMethodName: true,
}

// publicServices are infrastructure: load balancers and kubelets probe health without a token,
// and reflection describes the same API the public OpenAPI document does.
var publicServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func isPublic(method string) bool {
	if publicMethods[method] {
		return true
	}
	for _, p := range publicServices {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

type interceptors struct {
	authenticator authn.TokenAuthenticator
	log           *slog.Logger
	loopback      net.Addr
}

// clientAddress is the real client's address: the TCP peer, or for REST calls (which reach
// gRPC over the in-process connection) the address grpc-gateway's request came from.
func (in *interceptors) clientAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if p.Addr == in.loopback {
		if v := metadata.ValueFromIncomingContext(ctx, clientAddressKey); len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	return p.Addr.String()
}

// authenticate puts the caller's identity into ctx, or fails with Unauthenticated (bad or
// missing credential) or Unavailable (the identity source could not check it).
func (in *interceptors) authenticate(ctx context.Context, method string) (context.Context, error) {
	ctx = authn.WithClientAddress(ctx, in.clientAddress(ctx))
	if isPublic(method) {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	// The HTTP parser of authn applies the same rules as the proxy: exactly one header,
	// "Bearer <token>", nothing ambiguous.
	token, err := authn.TakeBearerToken(&http.Request{Header: http.Header{"Authorization": md.Get("authorization")}})
	if err != nil {
		in.logRefusal(ctx, method, err)
		return nil, status.Error(codes.Unauthenticated, authn.ClientMessage(err))
	}
	id, ok, err := in.authenticator.AuthenticateToken(ctx, token)
	var rejected *authn.RejectedError
	switch {
	case err != nil && !errors.As(err, &rejected):
		in.log.WarnContext(ctx, "authentication unavailable", "method", method,
			"client_address", authn.ClientAddressFrom(ctx), "error", err.Error())
		return nil, status.Error(codes.Unavailable, "the credential could not be checked right now; try again")
	case err != nil:
		in.logRefusal(ctx, method, err)
		return nil, status.Error(codes.Unauthenticated, authn.ClientMessage(err))
	case !ok:
		in.logRefusal(ctx, method, authn.ErrUnrecognized)
		return nil, status.Error(codes.Unauthenticated, authn.ClientMessage(authn.ErrUnrecognized))
	}
	return authn.WithIdentity(ctx, id), nil
}

func (in *interceptors) logRefusal(ctx context.Context, method string, err error) {
	in.log.InfoContext(ctx, "authentication failed", "method", method,
		"reason", authn.FailureReason(err), "client_address", authn.ClientAddressFrom(ctx))
}

func (in *interceptors) authenticateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := in.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (in *interceptors) authenticateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := in.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// logUnary writes one line per call: method, outcome, duration, caller. Never a message body,
// so neither a password nor a token can reach the log from here.
func (in *interceptors) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	code := status.Code(err)
	level := slog.LevelDebug
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	in.log.Log(ctx, level, "api call", "method", info.FullMethod, "code", code.String(),
		"duration_ms", time.Since(start).Milliseconds(), "client_address", in.clientAddress(ctx))
	return resp, err
}

func (in *interceptors) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			in.log.ErrorContext(ctx, "panic in API call", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error; the gateway's log has the details")
		}
	}()
	return handler(ctx, req)
}

func (in *interceptors) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			in.log.ErrorContext(ss.Context(), "panic in API stream", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error; the gateway's log has the details")
		}
	}()
	return handler(srv, ss)
}
