// Package authn says who a request comes from. Each identity source (the gateway's own session
// tokens; later LDAP/AD and OIDC) is a TokenAuthenticator, tried in turn by Union.
//
// The contract follows k8s.io/apiserver's: (identity, true, nil) means authenticated;
// (nil, false, nil) means "not my kind of token", so the next source may try; an error means the
// token was this source's and is bad (expired, revoked, tampered) or the source is down.
package authn

import (
	"context"
	"errors"
	"time"
)

// Identity is an authenticated person or machine.
type Identity struct {
	// User is the Kubernetes username the request is impersonated as.
	User string
	// UID is stable across renames (objectGUID, OIDC sub), forwarded as Impersonate-Uid.
	UID string
	// Groups, already prefixed by source (e.g. "ad:k8s-devs").
	Groups []string
	// Extra is forwarded as Impersonate-Extra-*.
	Extra map[string][]string
	// Source names the identity source, e.g. "session", "ldap:corp".
	Source string
	// SessionID identifies the gateway session the token belongs to, if any.
	SessionID string
	// ExpiresAt is when the credential stops being valid.
	ExpiresAt time.Time
}

// TokenAuthenticator checks a bearer token.
type TokenAuthenticator interface {
	AuthenticateToken(ctx context.Context, token string) (*Identity, bool, error)
}

// TokenFunc adapts a function to TokenAuthenticator (handy in tests).
type TokenFunc func(ctx context.Context, token string) (*Identity, bool, error)

// AuthenticateToken calls f.
func (f TokenFunc) AuthenticateToken(ctx context.Context, token string) (*Identity, bool, error) {
	return f(ctx, token)
}

// ErrUnrecognized is returned by Union when no source claimed the token.
var ErrUnrecognized = errors.New("token not recognized by any identity source")

// Union tries each authenticator in order and stops at the first that claims the token.
// A source that claims it and fails decides the outcome: a revoked session token must not be
// accepted by some later source.
type Union []TokenAuthenticator

// AuthenticateToken implements TokenAuthenticator.
func (u Union) AuthenticateToken(ctx context.Context, token string) (*Identity, bool, error) {
	for _, a := range u {
		id, ok, err := a.AuthenticateToken(ctx, token)
		if err != nil {
			return nil, false, err
		}
		if ok {
			return id, true, nil
		}
	}
	return nil, false, nil
}
