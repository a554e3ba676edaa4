package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// maxTokenSize bounds what Verify will decode. Sessions of users in hundreds
// of groups stay well below it; anything larger is refused before parsing.
const maxTokenSize = 64 << 10

// Claims is what a session token asserts about its holder.
type Claims struct {
	User, UID string
	Groups    []string
	Extra     map[string][]string
	// Source names the login that created the session, e.g. "ldap:corp".
	Source string
	// SessionID is random (128 bit) and doubles as the jti; revocation is by
	// session id.
	SessionID           string
	IssuedAt, ExpiresAt time.Time
}

// clone returns a deep copy, so callers cannot change a cached result.
func (c *Claims) clone() *Claims {
	out := *c
	out.Groups = slices.Clone(c.Groups)
	out.Extra = cloneExtra(c.Extra)
	return &out
}

func cloneExtra(extra map[string][]string) map[string][]string {
	if extra == nil {
		return nil
	}
	out := make(map[string][]string, len(extra))
	for k, v := range extra {
		out[k] = slices.Clone(v)
	}
	return out
}

// wireClaims is the JWT payload. Registered claims come from jwt.Claims.
type wireClaims struct {
	jwt.Claims
	UID    string              `json:"uid,omitempty"`
	Groups []string            `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
	Source string              `json:"src,omitempty"`
}

// Mint issues a token for in.User. It fills SessionID, IssuedAt and ExpiresAt
// (now+TTL, or in.ExpiresAt when that is earlier) and returns the claims as
// the token carries them (times truncated to whole seconds).
func (m *Manager) Mint(ctx context.Context, in Claims) (string, Claims, error) {
	if err := ctx.Err(); err != nil {
		return "", Claims{}, fmt.Errorf("session: mint: %w", err)
	}
	if in.User == "" {
		return "", Claims{}, errors.New("session: mint: user is required")
	}
	now := m.cfg.Clock.Now()
	iat := time.Unix(now.Unix(), 0).UTC()
	exp := iat.Add(m.cfg.TTL)
	if !in.ExpiresAt.IsZero() {
		if want := time.Unix(in.ExpiresAt.Unix(), 0).UTC(); want.Before(exp) {
			exp = want
		}
		if !exp.After(iat) {
			return "", Claims{}, errors.New("session: mint: expiry is not in the future")
		}
	}
	sid, err := newSessionID()
	if err != nil {
		return "", Claims{}, fmt.Errorf("session: mint: %w", err)
	}
	out := Claims{
		User:      in.User,
		UID:       in.UID,
		Groups:    slices.Clone(in.Groups),
		Extra:     cloneExtra(in.Extra),
		Source:    in.Source,
		SessionID: sid,
		IssuedAt:  iat,
		ExpiresAt: exp,
	}
	wire := wireClaims{
		Claims: jwt.Claims{
			Issuer:    m.cfg.Issuer,
			Subject:   out.User,
			ID:        sid,
			IssuedAt:  jwt.NewNumericDate(iat),
			NotBefore: jwt.NewNumericDate(iat),
			Expiry:    jwt.NewNumericDate(exp),
		},
		UID:    out.UID,
		Groups: out.Groups,
		Extra:  out.Extra,
		Source: out.Source,
	}
	token, err := jwt.Signed(m.keys.Load().signing().signer).Claims(wire).Serialize()
	if err != nil {
		return "", Claims{}, fmt.Errorf("session: mint: %w", err)
	}
	if len(token) > maxTokenSize {
		return "", Claims{}, fmt.Errorf("session: mint: token of %d bytes exceeds %d (too many groups or extra values)", len(token), maxTokenSize)
	}
	return token, out, nil
}

func newSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// verified is the result of a full (uncached) verification.
type verified struct {
	claims    *Claims
	key       *key
	notBefore time.Time
}

// verifyToken checks everything but time and revocation. The issuer is read
// before the signature: a foreign token must come out as ErrNotSession
// whatever its alg, so the next authenticator gets its turn; nothing from the
// unverified payload is trusted beyond that routing decision.
func (m *Manager) verifyToken(token string) (*verified, error) {
	headerB64, rest, ok := strings.Cut(token, ".")
	payloadB64, sigB64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Count(token, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	// go-jose decodes leniently (padding, unused low bits set, CR and LF skipped), so one
	// signed token has many spellings; only the canonical one, the one Mint wrote, is a
	// session.
	if !onlyJWSBytes(token) {
		return nil, fmt.Errorf("%w: bytes outside base64url", ErrMalformed)
	}
	if _, err := strictB64.DecodeString(sigB64); err != nil {
		return nil, fmt.Errorf("%w: signature: not canonical base64url", ErrMalformed)
	}
	var routing struct {
		Issuer string `json:"iss"`
	}
	if err := decodeSegment(payloadB64, &routing); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	if routing.Issuer != m.cfg.Issuer {
		return nil, ErrNotSession
	}

	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := decodeSegment(headerB64, &hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if hdr.Alg != string(jose.EdDSA) {
		return nil, fmt.Errorf("%w: alg %s not accepted", ErrMalformed, short(hdr.Alg))
	}
	if hdr.Typ != tokenType {
		return nil, fmt.Errorf("%w: typ %s not accepted", ErrMalformed, short(hdr.Typ))
	}
	if !kidPattern.MatchString(hdr.Kid) {
		return nil, fmt.Errorf("%w: missing or invalid kid", ErrMalformed)
	}
	k, err := m.lookupKey(hdr.Kid)
	if err != nil {
		return nil, err
	}

	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("%w: invalid JWS", ErrMalformed)
	}
	payload, err := jws.Verify(k.public)
	if err != nil {
		return nil, fmt.Errorf("%w (kid %s)", ErrBadSignature, k.kid)
	}

	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fmt.Errorf("%w: claims are not valid JSON", ErrMalformed)
	}
	if w.Subject == "" || w.ID == "" || w.IssuedAt == nil || w.NotBefore == nil || w.Expiry == nil {
		return nil, fmt.Errorf("%w: missing sub, jti, iat, nbf or exp", ErrMalformed)
	}
	return &verified{
		claims: &Claims{
			User:      w.Subject,
			UID:       w.UID,
			Groups:    w.Groups,
			Extra:     w.Extra,
			Source:    w.Source,
			SessionID: w.ID,
			IssuedAt:  w.IssuedAt.Time().UTC(),
			ExpiresAt: w.Expiry.Time().UTC(),
		},
		key:       k,
		notBefore: w.NotBefore.Time().UTC(),
	}, nil
}

// onlyJWSBytes reports whether token holds nothing but the base64url alphabet and dots.
func onlyJWSBytes(token string) bool {
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// strictB64 refuses padding and non-zero unused bits: the encoding of a segment is unique.
var strictB64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes one canonical base64url JSON segment. Its errors are
// fixed strings: decoder errors can quote bytes of the token.
func decodeSegment(seg string, v any) error {
	raw, err := strictB64.DecodeString(seg)
	if err != nil {
		return errors.New("not canonical base64url")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errors.New("not a JSON object of the expected shape")
	}
	return nil
}

// short quotes an untrusted header value for an error message, bounded.
func short(s string) string {
	if len(s) > 32 {
		return fmt.Sprintf("%q...", s[:32])
	}
	return fmt.Sprintf("%q", s)
}

// checkWindow applies nbf/exp with the configured leeway.
func (m *Manager) checkWindow(now, notBefore, expires time.Time) error {
	if now.After(expires.Add(m.cfg.Leeway)) {
		return fmt.Errorf("%w at %s", ErrExpired, expires.Format(time.RFC3339))
	}
	if now.Before(notBefore.Add(-m.cfg.Leeway)) {
		return fmt.Errorf("%w before %s", ErrNotYetValid, notBefore.Format(time.RFC3339))
	}
	return nil
}
