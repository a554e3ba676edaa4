package authn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/kaccess/kaccess/internal/session"
)

// SessionSource is the Source of identities from the gateway's own session tokens, when the
// token does not name the login source it came from.
const SessionSource = "session"

// HashSessionID returns a short, stable reference to a session that lets its requests be
// grouped, in kaccess' record and in the API server's own log alike, without showing the id
// (the revocation handle) anywhere: the first 16 hex digits (64 bits) of the SHA-256 of the id.
// Empty for an empty id.
func HashSessionID(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:8])
}

// SessionVerifier is what the session authenticator needs of internal/session.
type SessionVerifier interface {
	Verify(ctx context.Context, token string) (*session.Claims, error)
}

// Sessions authenticates the gateway's own session tokens.
type Sessions struct{ Verifier SessionVerifier }

// AuthenticateToken implements TokenAuthenticator. A token that is not a session token at all
// (not a JWS, or another issuer's) is left to the next source.
func (s Sessions) AuthenticateToken(ctx context.Context, token string) (*Identity, bool, error) {
	c, err := s.Verifier.Verify(ctx, token)
	switch {
	case err == nil:
	case errors.Is(err, session.ErrMalformed), errors.Is(err, session.ErrNotSession):
		return nil, false, nil
	default:
		return nil, false, sessionRejection(err)
	}
	source := c.Source
	if source == "" {
		source = SessionSource
	}
	return &Identity{
		User: c.User, UID: c.UID, Groups: c.Groups, Extra: c.Extra,
		Source: source, SessionID: c.SessionID, ExpiresAt: c.ExpiresAt,
	}, true, nil
}

func sessionRejection(err error) error {
	rej := &RejectedError{Source: SessionSource, Err: err}
	switch {
	case errors.Is(err, session.ErrExpired):
		rej.Reason, rej.Message = "expired", "the session has expired; run `kaccess login`"
	case errors.Is(err, session.ErrRevoked):
		rej.Reason, rej.Message = "revoked", "the session was ended (logged out or revoked); run `kaccess login`"
	case errors.Is(err, session.ErrRevocationsUnknown):
		rej.Reason, rej.Message = "revocations_unknown", "the gateway has not loaded its revocation list yet (its API server is unreachable); try again shortly"
	case errors.Is(err, session.ErrNotYetValid):
		rej.Reason, rej.Message = "not_yet_valid", "the session token is not valid yet; check this machine's clock"
	case errors.Is(err, session.ErrBadSignature), errors.Is(err, session.ErrUnknownKey):
		rej.Reason, rej.Message = "bad_signature", "the session token's signature is not valid; run `kaccess login`"
	default:
		rej.Reason, rej.Message = "error", "the session token could not be checked"
	}
	return rej
}
