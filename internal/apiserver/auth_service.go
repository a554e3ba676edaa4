package apiserver

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	auditevent "github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/session"
)

// Input bounds. Directories allow far less (AD: 20-character sAMAccountName, 256-character
// passwords); these only keep junk away from the directory.
const (
	maxUsernameBytes = 256
	maxPasswordBytes = 1024

	defaultPageSize = 100
	maxPageSize     = 1000
)

// authService implements kaccess.v1.AuthService.
type authService struct {
	kaccessv1.UnimplementedAuthServiceServer

	audit    Recorder
	sessions SessionStore
	sources  map[string]Source
	names    []string // sorted source names
	log      *slog.Logger
	onLogin  func(source, outcome string) // may be nil
}

// countLogin reports a login attempt's outcome to Config.OnLogin.
func (a *authService) countLogin(source, outcome string) {
	if a.onLogin != nil {
		a.onLogin(source, outcome)
	}
}

// Login checks the password with the named source and starts a session.
func (a *authService) Login(ctx context.Context, req *kaccessv1.LoginRequest) (*kaccessv1.LoginResponse, error) {
	if err := validateLogin(req); err != nil {
		return nil, err
	}
	// Every login attempt is logged once, with its outcome; never the password or the token.
	event := []any{"user", req.GetUsername(), "source", req.GetSource(), "client_address", authn.ClientAddressFrom(ctx)}
	src, ok := a.sources[req.GetSource()]
	if !ok {
		a.log.InfoContext(ctx, "login", append(event, "outcome", "unknown_source")...)
		// The name was validated above, so echoing it is safe; nothing about the configured
		// sources is revealed beyond what ListSources shows anyway.
		return nil, violations{{Field: "source", Description: "no login source named " + strconv.Quote(req.GetSource()) + "; ListSources lists them"}}.err()
	}

	if src.Passwords == nil {
		a.log.InfoContext(ctx, "login", append(event, "outcome", "wrong_kind")...)
		return nil, violations{{Field: "source", Description: strconv.Quote(req.GetSource()) +
			" is an OpenID Connect source: log in at its issuer and exchange the ID token (kaccess login --source " + req.GetSource() + ")"}}.err()
	}
	id, err := src.Passwords.Login(ctx, req.GetUsername(), req.GetPassword())
	if err == nil && (id == nil || id.User == "") {
		a.log.ErrorContext(ctx, "login", append(event, "outcome", "source_error", "error", "the source returned no identity")...)
		return nil, status.Error(codes.Internal, "the login source returned no identity; the gateway's log has the details")
	}
	if err != nil {
		st, outcome := loginFailure(ctx, err)
		level := slog.LevelInfo
		if st.Code() == codes.Unavailable {
			level = slog.LevelWarn
		}
		a.log.Log(ctx, level, "login", append(event, "outcome", outcome, "error", err.Error())...)
		a.recordLoginFailure(ctx, req.GetSource(), req.GetUsername(), outcome, st.Err())
		return nil, st.Err()
	}

	token, claims, err := a.startSession(ctx, event, id, req.GetSource(), time.Time{}, "password")
	if err != nil {
		return nil, err
	}
	return &kaccessv1.LoginResponse{Token: token, ExpireTime: timestamppb.New(claims.ExpiresAt),
		Identity: identityOf(claims), SessionId: claims.SessionID}, nil
}

// startSession mints the session of a successful login and logs the login event. The session's
// source is the configured name the client chose (and can log in with again), whatever the
// source put in the identity; expiresAt, when set, caps the session's life.
func (a *authService) startSession(ctx context.Context, event []any, id *authn.Identity, source string, expiresAt time.Time, method string) (string, session.Claims, error) {
	token, claims, err := a.sessions.Mint(ctx, session.Claims{
		User: id.User, UID: id.UID, Groups: id.Groups, Extra: id.Extra, Source: source, ExpiresAt: expiresAt,
	})
	if err != nil {
		a.log.ErrorContext(ctx, "login", append(event, "outcome", "session_error", "error", err.Error())...)
		return "", session.Claims{}, status.Error(codes.Internal, "the session could not be created; the gateway's log has the details")
	}
	// The session is handed out only once its start is on the audit record.
	rec := stateEvent(ctx, auditevent.KindLogin, source)
	rec.User, rec.UID, rec.Groups = claims.User, claims.UID, claims.Groups
	rec.SessionIDHash = auditevent.HashSessionID(claims.SessionID)
	rec.Extra = map[string]string{"method": method, "expire_time": claims.ExpiresAt.UTC().Format(time.RFC3339)}
	rec.SetStateOutcome(httpStatus(nil), "")
	if err := a.audit.Record(rec); err != nil {
		a.log.ErrorContext(ctx, "login", append(event, "outcome", "audit_error", "error", err.Error())...)
		return "", session.Claims{}, status.Error(codes.Unavailable, "the login could not be recorded in the audit log, so no session was started; try again later")
	}
	a.countLogin(source, "success")
	a.log.InfoContext(ctx, "login", append(event, "outcome", "success", "session_id", claims.SessionID,
		"uid", claims.UID, "groups", len(claims.Groups), "expire_time", claims.ExpiresAt)...)
	return token, claims, nil
}

func identityOf(c session.Claims) *kaccessv1.Identity {
	return &kaccessv1.Identity{User: c.User, Uid: c.UID, Groups: c.Groups, Source: c.Source}
}

func validateLogin(req *kaccessv1.LoginRequest) error {
	var v violations
	switch src := req.GetSource(); {
	case src == "":
		v.add("source", "required")
	case !sourceNameRE.MatchString(src):
		v.add("source", "must be a login source name as ListSources returns them")
	}
	switch u := req.GetUsername(); {
	case u == "":
		v.add("username", "required")
	case len(u) > maxUsernameBytes:
		v.add("username", "longer than 256 bytes")
	case !utf8.ValidString(u) || strings.ContainsFunc(u, unicode.IsControl):
		v.add("username", "must be UTF-8 text without control characters")
	}
	switch p := req.GetPassword(); {
	case p == "":
		v.add("password", "required")
	case len(p) > maxPasswordBytes:
		v.add("password", "longer than 1024 bytes")
	case strings.ContainsRune(p, 0):
		v.add("password", "must not contain NUL")
	}
	return v.err()
}

// WhoAmI returns the caller's identity.
func (a *authService) WhoAmI(ctx context.Context, _ *kaccessv1.WhoAmIRequest) (*kaccessv1.WhoAmIResponse, error) {
	id, ok := authn.IdentityFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, authn.ErrNoCredential.Error())
	}
	resp := &kaccessv1.WhoAmIResponse{
		Identity:  &kaccessv1.Identity{User: id.User, Uid: id.UID, Groups: id.Groups, Source: id.Source},
		SessionId: id.SessionID,
	}
	if !id.ExpiresAt.IsZero() {
		resp.ExpireTime = timestamppb.New(id.ExpiresAt)
	}
	return resp, nil
}

// Logout revokes the caller's session until its tokens expire.
func (a *authService) Logout(ctx context.Context, _ *kaccessv1.LogoutRequest) (*kaccessv1.LogoutResponse, error) {
	id, ok := authn.IdentityFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, authn.ErrNoCredential.Error())
	}
	event := []any{"user", id.User, "source", id.Source, "client_address", authn.ClientAddressFrom(ctx), "session_id", id.SessionID}
	if id.SessionID == "" {
		return nil, status.Error(codes.FailedPrecondition, "the credential is not a gateway session token, so there is no session to end")
	}
	if err := a.sessions.Revoke(ctx, id.SessionID, id.ExpiresAt); err != nil {
		a.log.ErrorContext(ctx, "logout", append(event, "outcome", "error", "error", err.Error())...)
		return nil, status.Error(codes.Unavailable, "the session could not be ended; try again")
	}
	// Ending a session only takes access away, so it stands even if it cannot be recorded.
	rec := stateEvent(ctx, auditevent.KindLogout, id.Source)
	rec.User, rec.UID, rec.Groups = id.User, id.UID, id.Groups
	rec.SessionIDHash = auditevent.HashSessionID(id.SessionID)
	rec.SetStateOutcome(httpStatus(nil), "")
	if err := a.audit.Record(rec); err != nil {
		a.log.ErrorContext(ctx, "logout not recorded in the audit log", append(event, "error", err.Error())...)
	}
	a.log.InfoContext(ctx, "logout", append(event, "outcome", "success")...)
	return &kaccessv1.LogoutResponse{}, nil
}

// ListSources pages through the sources in name order. The page token is the last name of the
// previous page, so pages stay right when sources change between calls.
func (a *authService) ListSources(_ context.Context, req *kaccessv1.ListSourcesRequest) (*kaccessv1.ListSourcesResponse, error) {
	var v violations
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		v.add("page_size", "must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !sourceNameRE.Match(after) {
			v.add("page_token", "not a token from an earlier ListSources response")
		} else {
			start, _ = slices.BinarySearch(a.names, string(after))
			if start < len(a.names) && a.names[start] == string(after) {
				start++
			}
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	end := min(start+size, len(a.names))
	resp := &kaccessv1.ListSourcesResponse{}
	for _, name := range a.names[start:end] {
		src := a.sources[name]
		resp.Sources = append(resp.Sources, &kaccessv1.Source{Name: name, Type: src.Type,
			IssuerUrl: src.IssuerURL, ClientId: src.ClientID, Scopes: src.Scopes})
	}
	if end < len(a.names) {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(a.names[end-1]))
	}
	return resp, nil
}

// maxIDTokenBytes bounds an ID token; real ones are a few KiB.
const maxIDTokenBytes = 64 << 10

// ExchangeToken verifies an ID token of the named OIDC source and starts a session that ends
// no later than the ID token does, so the issuer's decisions (a disabled account, fewer groups)
// reach the gateway at the next renewal.
func (a *authService) ExchangeToken(ctx context.Context, req *kaccessv1.ExchangeTokenRequest) (*kaccessv1.ExchangeTokenResponse, error) {
	var v violations
	switch src := req.GetSource(); {
	case src == "":
		v.add("source", "required")
	case !sourceNameRE.MatchString(src):
		v.add("source", "must be a login source name as ListSources returns them")
	}
	switch t := req.GetIdToken(); {
	case t == "":
		v.add("id_token", "required")
	case len(t) > maxIDTokenBytes:
		v.add("id_token", "longer than 64 KiB")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	event := []any{"source", req.GetSource(), "client_address", authn.ClientAddressFrom(ctx), "method", "id_token"}
	src, ok := a.sources[req.GetSource()]
	if !ok || src.IDTokens == nil {
		a.log.InfoContext(ctx, "login", append(event, "outcome", "unknown_source")...)
		return nil, violations{{Field: "source", Description: "no OpenID Connect source named " + strconv.Quote(req.GetSource()) + "; ListSources lists them"}}.err()
	}
	id, ok, err := src.IDTokens.AuthenticateToken(ctx, req.GetIdToken())
	switch {
	case err != nil:
		var rej *authn.RejectedError
		code := codes.Unauthenticated
		msg := "the ID token could not be checked"
		if errors.As(err, &rej) {
			msg = rej.Message
			if rej.Reason == "idp_unavailable" {
				code = codes.Unavailable
			}
		}
		a.log.InfoContext(ctx, "login", append(event, "outcome", authn.FailureReason(err), "error", err.Error())...)
		refusal := status.Error(code, msg)
		a.recordLoginFailure(ctx, req.GetSource(), "", authn.FailureReason(err), refusal)
		return nil, refusal
	case !ok || id == nil || id.User == "":
		a.log.InfoContext(ctx, "login", append(event, "outcome", "unknown_issuer")...)
		refusal := status.Error(codes.Unauthenticated, "the ID token is not from the issuer of source "+strconv.Quote(req.GetSource()))
		a.recordLoginFailure(ctx, req.GetSource(), "", "unknown_issuer", refusal)
		return nil, refusal
	}
	event = append(event, "user", id.User)
	token, claims, err := a.startSession(ctx, event, id, req.GetSource(), id.ExpiresAt, "id_token")
	if err != nil {
		return nil, err
	}
	return &kaccessv1.ExchangeTokenResponse{Token: token, ExpireTime: timestamppb.New(claims.ExpiresAt),
		Identity: identityOf(claims), SessionId: claims.SessionID}, nil
}

// recordLoginFailure puts a refused login on the audit record (the name as typed: it may not
// exist), with the status the caller got for refusal and the outcome as the reason: refused
// for what the gateway turned down (401 wrong credentials, 403 a disabled, locked or expired
// account, 429 too many attempts), error for what failed (503 the directory or issuer is
// down, 504, 499). A failure to record it is logged; the login is refused either way.
func (a *authService) recordLoginFailure(ctx context.Context, source, user, outcome string, refusal error) {
	a.countLogin(source, outcome)
	rec := stateEvent(ctx, auditevent.KindLoginFailed, source)
	rec.User = user
	rec.SetStateOutcome(httpStatus(refusal), outcome)
	rec.Extra = map[string]string{"outcome": outcome}
	if err := a.audit.Record(rec); err != nil {
		a.log.ErrorContext(ctx, "failed login not recorded in the audit log", "error", err.Error())
	}
}
