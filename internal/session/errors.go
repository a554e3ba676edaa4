package session

import "errors"

// Verification errors. Callers tell them apart with errors.Is; the messages
// never contain the token itself.
var (
	// ErrMalformed: not a compact JWS this package could have issued
	// (bad encoding, wrong alg or typ, missing claims, too large).
	ErrMalformed = errors.New("session: malformed token")
	// ErrNotSession: a well-formed JWT from another issuer. An authenticator
	// treats this as "not mine" and lets the next source try.
	ErrNotSession = errors.New("session: not a session token")
	// ErrUnknownKey: the kid is not among the loaded keys, even after a reload.
	ErrUnknownKey = errors.New("session: unknown signing key")
	// ErrBadSignature: the signature does not verify with the named key.
	ErrBadSignature = errors.New("session: bad signature")
	// ErrExpired: past exp (plus leeway).
	ErrExpired = errors.New("session: token expired")
	// ErrNotYetValid: before nbf (minus leeway).
	ErrNotYetValid = errors.New("session: token not yet valid")
	// ErrRevoked: the session was revoked.
	ErrRevoked = errors.New("session: session revoked")
	// ErrRevocationsUnknown: the shared revocation list is not loaded yet (its API server
	// has not answered since the gateway started), so no session can be trusted.
	ErrRevocationsUnknown = errors.New("session: revocation list not loaded yet")
)
