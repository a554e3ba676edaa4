package oidc

import (
	"errors"
	"fmt"

	"github.com/kaccess/kaccess/internal/authn"
)

// Reasons: the bounded metrics labels of authn.RejectedError from this source. A token of an
// issuer that is not configured is not an error at all: it is "not mine".
const (
	ReasonMalformed      = "malformed"
	ReasonBadAlgorithm   = "bad_algorithm"
	ReasonBadSignature   = "bad_signature"
	ReasonWrongAudience  = "wrong_audience"
	ReasonExpired        = "expired"
	ReasonNotYetValid    = "not_yet_valid"
	ReasonMissingClaim   = "missing_claim"
	ReasonBadClaim       = "bad_claim"
	ReasonIDPUnavailable = "idp_unavailable"
)

// Sentinel errors, one per reason, for callers that test with errors.Is.
var (
	ErrMalformed      = errors.New("ID token is malformed")
	ErrBadAlgorithm   = errors.New("ID token signing algorithm not accepted")
	ErrBadSignature   = errors.New("ID token signature not valid")
	ErrWrongAudience  = errors.New("ID token audience not accepted")
	ErrExpired        = errors.New("ID token expired")
	ErrNotYetValid    = errors.New("ID token not yet valid")
	ErrMissingClaim   = errors.New("ID token lacks a required claim")
	ErrBadClaim       = errors.New("ID token claim has the wrong type or value")
	ErrIDPUnavailable = errors.New("identity provider unavailable")
)

var reasons = map[error]string{
	ErrMalformed: ReasonMalformed, ErrBadAlgorithm: ReasonBadAlgorithm, ErrBadSignature: ReasonBadSignature,
	ErrWrongAudience: ReasonWrongAudience, ErrExpired: ReasonExpired, ErrNotYetValid: ReasonNotYetValid,
	ErrMissingClaim: ReasonMissingClaim, ErrBadClaim: ReasonBadClaim, ErrIDPUnavailable: ReasonIDPUnavailable,
}

// reject wraps cause (which must wrap one of the sentinels) in an authn.RejectedError with a
// message safe for the client: it may name claims and the issuer, never the token.
func reject(cfg *Config, sentinel error, message string, cause error) error {
	err := sentinel
	if cause != nil {
		err = fmt.Errorf("%w: %w", sentinel, cause)
	}
	return &authn.RejectedError{Source: cfg.Source(), Reason: reasons[sentinel], Message: message, Err: err}
}

const relogin = "; sign in again (`kaccess login`)"

func rejectExpired(cfg *Config, cause error) error {
	return reject(cfg, ErrExpired, "the OpenID Connect ID token has expired"+relogin, cause)
}

func rejectNotYetValid(cfg *Config, cause error) error {
	return reject(cfg, ErrNotYetValid, "the ID token is not valid yet; check this machine's clock", cause)
}

func rejectAudience(cfg *Config, cause error) error {
	return reject(cfg, ErrWrongAudience, fmt.Sprintf("the ID token was issued for another application (its audience is not a client ID the gateway accepts from %s)", cfg.IssuerURL), cause)
}

func rejectSignature(cfg *Config, cause error) error {
	return reject(cfg, ErrBadSignature, fmt.Sprintf("the ID token's signature is not valid for %s", cfg.IssuerURL)+relogin, cause)
}

func rejectAlgorithm(cfg *Config, alg string) error {
	return reject(cfg, ErrBadAlgorithm, fmt.Sprintf("the ID token is signed with %q, which the gateway does not accept", alg),
		fmt.Errorf("alg %q not in %v", alg, cfg.SigningAlgs))
}

func rejectMalformed(cfg *Config, cause error) error {
	return reject(cfg, ErrMalformed, "the ID token is not a well-formed signed JWT", cause)
}

func rejectMissingClaim(cfg *Config, claim string) error {
	return reject(cfg, ErrMissingClaim, fmt.Sprintf("the ID token lacks the claim %q (or its required value) that the gateway requires", claim),
		fmt.Errorf("claim %q", claim))
}

func rejectBadClaim(cfg *Config, claim, why string) error {
	return reject(cfg, ErrBadClaim, fmt.Sprintf("the ID token's %q claim is not usable: %s", claim, why),
		fmt.Errorf("claim %q: %s", claim, why))
}

func rejectUnavailable(cfg *Config, cause error) error {
	return reject(cfg, ErrIDPUnavailable, fmt.Sprintf("the identity provider %s cannot be reached to check the token; try again shortly", cfg.IssuerURL), cause)
}
