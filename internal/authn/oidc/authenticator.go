package oidc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/kaccess/kaccess/internal/authn"
)

// Defaults of Options.
const (
	// DefaultDiscoveryRetry is the least time between two discovery attempts made for requests
	// while a provider is unreachable, so that a down provider is not asked once per request.
	DefaultDiscoveryRetry = 5 * time.Second
	// DefaultHTTPTimeout bounds each request to a provider (discovery, keys).
	DefaultHTTPTimeout = 10 * time.Second
	// DefaultJWKSRefetchInterval is the least time between key-set fetches once the burst of
	// jwksRefetchBurst is spent. A token with a key id the gateway does not hold yet is refused
	// as bad_signature while the limit holds, and accepted after it.
	DefaultJWKSRefetchInterval = 10 * time.Second
	maxBackgroundRetry         = time.Minute
)

// Options are the injected parts of an Authenticator.
type Options struct {
	// Logger receives discovery failures and recoveries; default slog.Default().
	Logger *slog.Logger
	// Now is the clock for expiry checks and the cache; default time.Now.
	Now func() time.Time
	// CacheSize bounds the verified-token cache; 0 means DefaultCacheSize, negative no cache.
	CacheSize int
	// DiscoveryRetry: see DefaultDiscoveryRetry.
	DiscoveryRetry time.Duration
	// HTTPTimeout: see DefaultHTTPTimeout.
	HTTPTimeout time.Duration
	// JWKSRefetchInterval: see DefaultJWKSRefetchInterval.
	JWKSRefetchInterval time.Duration
}

// Authenticator accepts ID tokens from the configured issuers. It is an authn.TokenAuthenticator:
// a token that is not a JWT, or whose (unverified) "iss" is not configured, is "not mine".
type Authenticator struct {
	issuers map[string]*issuer
	cache   *cache
	now     func() time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var _ authn.TokenAuthenticator = (*Authenticator)(nil)

// New validates cfgs (after SetDefaults) and returns an Authenticator. It does not wait for the
// providers: discovery runs in the background (retried with backoff) and again on first use, so
// a provider that is down does not stop the gateway from starting; its tokens fail with
// idp_unavailable until it answers. ctx gives values only (it may be a start-up context with a
// deadline); call Close to stop the background discovery.
func New(ctx context.Context, cfgs []Config, opts Options) (*Authenticator, error) {
	cfgs = slices.Clone(cfgs)
	for i := range cfgs {
		cfgs[i].SetDefaults()
	}
	if err := ValidateAll(cfgs); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.DiscoveryRetry <= 0 {
		opts.DiscoveryRetry = DefaultDiscoveryRetry
	}
	if opts.HTTPTimeout <= 0 {
		opts.HTTPTimeout = DefaultHTTPTimeout
	}
	if opts.JWKSRefetchInterval <= 0 {
		opts.JWKSRefetchInterval = DefaultJWKSRefetchInterval
	}
	a := &Authenticator{issuers: make(map[string]*issuer, len(cfgs)), cache: newCache(opts.CacheSize), now: opts.Now}
	for i := range cfgs {
		cfg := &cfgs[i]
		iss, err := newIssuer(cfg, opts)
		if err != nil {
			return nil, fmt.Errorf("oidc[%d].caFile: %w", i, err)
		}
		a.issuers[cfg.IssuerURL] = iss
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	for _, iss := range a.issuers {
		a.wg.Go(func() { iss.discoverInBackground(bg) })
	}
	return a, nil
}

// Close stops background discovery.
func (a *Authenticator) Close() error {
	a.cancel()
	a.wg.Wait()
	return nil
}

// Ready reports, per source name, whether the provider's discovery document has been read.
func (a *Authenticator) Ready() map[string]bool {
	out := make(map[string]bool, len(a.issuers))
	for _, iss := range a.issuers {
		out[iss.cfg.Name] = iss.verifier.Load() != nil
	}
	return out
}

// AuthenticateToken implements authn.TokenAuthenticator.
func (a *Authenticator) AuthenticateToken(ctx context.Context, token string) (*authn.Identity, bool, error) {
	now := a.now()
	// The cache comes first: a token verified before needs no parsing at all. Its key is the
	// token's SHA-256, so the cache never holds a token.
	key := tokenKey(sha256.Sum256([]byte(token)))
	if e, hit := a.cache.get(key); hit {
		// A cached token is checked for expiry on every use, with the same skew as a fresh one.
		if now.After(e.id.ExpiresAt.Add(time.Duration(e.cfg.ClockSkew))) {
			a.cache.remove(key)
			return nil, false, rejectExpired(e.cfg, fmt.Errorf("expired at %s (cached)", e.id.ExpiresAt.UTC().Format(time.RFC3339)))
		}
		return cloneIdentity(e.id), true, nil
	}
	u, ok := peek(token)
	if !ok {
		return nil, false, nil
	}
	iss := a.issuers[u.iss]
	if iss == nil {
		return nil, false, nil
	}
	cfg := iss.cfg
	if !slices.Contains(cfg.SigningAlgs, u.alg) {
		return nil, false, rejectAlgorithm(cfg, u.alg)
	}
	if !canonicalJWS(token) {
		return nil, false, rejectMalformed(cfg, errors.New("not in canonical base64url (padding, unused bits set, or bytes outside the alphabet)"))
	}
	id, err := iss.verify(ctx, token, now)
	if err != nil {
		return nil, false, err
	}
	a.cache.put(key, cacheEntry{id: id, cfg: cfg}, now)
	return cloneIdentity(id), true, nil
}

func cloneIdentity(id *authn.Identity) *authn.Identity {
	c := *id
	c.Groups = slices.Clone(id.Groups)
	return &c
}

// verify checks a token of this issuer that is not in the cache.
func (i *issuer) verify(ctx context.Context, token string, now time.Time) (*authn.Identity, error) {
	cfg := i.cfg
	v, err := i.discover(ctx, false)
	if err != nil {
		return nil, rejectUnavailable(cfg, err)
	}
	obs := &observation{}
	idt, err := v.Verify(context.WithValue(ctx, observationKey{}, obs), token)
	if err != nil {
		switch {
		case !obs.called: // the JWS did not parse
			return nil, rejectMalformed(cfg, err)
		case errors.Is(obs.err, errJWKSRateLimited): // no cached key verifies it, and no refetch yet
			return nil, rejectSignature(cfg, obs.err)
		case obs.keysUnavailable():
			return nil, rejectUnavailable(cfg, obs.err)
		case obs.err != nil:
			return nil, rejectSignature(cfg, err)
		default: // signed, but the claims are not an ID token's
			return nil, rejectMalformed(cfg, err)
		}
	}
	var raw json.RawMessage
	if err := idt.Claims(&raw); err != nil {
		return nil, rejectMalformed(cfg, err)
	}
	claims := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, rejectMalformed(cfg, err)
	}
	return i.identity(idt, claims, now)
}

// identity checks audience, times and claims, and maps them to an Identity.
func (i *issuer) identity(idt *gooidc.IDToken, claims map[string]any, now time.Time) (*authn.Identity, error) {
	cfg := i.cfg
	skew := time.Duration(cfg.ClockSkew)
	if !slices.ContainsFunc(idt.Audience, func(aud string) bool { return slices.Contains(cfg.ClientIDs, aud) }) {
		return nil, rejectAudience(cfg, fmt.Errorf("aud %q, accepted %q", idt.Audience, cfg.ClientIDs))
	}
	if _, ok := claims["exp"]; !ok {
		return nil, rejectMissingClaim(cfg, "exp")
	}
	if now.After(idt.Expiry.Add(skew)) {
		return nil, rejectExpired(cfg, fmt.Errorf("expired at %s, now %s, skew %s", idt.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew))
	}
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := numericDate(claims, name)
		if err != nil {
			return nil, rejectBadClaim(cfg, name, err.Error())
		}
		if ok && now.Add(skew).Before(t) {
			return nil, rejectNotYetValid(cfg, fmt.Errorf("%s %s is after now %s + skew %s", name, t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew))
		}
	}
	if idt.Subject == "" {
		return nil, rejectMissingClaim(cfg, "sub")
	}
	for _, name := range sortedKeys(cfg.RequiredClaims) {
		if got, ok := claims[name].(string); !ok || got != cfg.RequiredClaims[name] {
			return nil, rejectMissingClaim(cfg, name)
		}
	}
	rawName, present := claims[cfg.UsernameClaim]
	name, isString := rawName.(string)
	switch {
	case !present:
		return nil, rejectMissingClaim(cfg, cfg.UsernameClaim)
	case !isString || name == "":
		return nil, rejectBadClaim(cfg, cfg.UsernameClaim, "the username must be a non-empty string")
	}
	if cfg.UsernameClaim == "email" {
		if ev, ok := claims["email_verified"]; ok && ev != true && ev != "true" {
			return nil, rejectBadClaim(cfg, "email_verified", "the email address is not verified by the provider")
		}
	}
	groups, err := stringList(claims, cfg.GroupsClaim)
	if err != nil {
		return nil, rejectBadClaim(cfg, cfg.GroupsClaim, "groups must be a list of strings ("+err.Error()+")")
	}
	gp := cfg.groupsPrefix()
	for k := range groups {
		groups[k] = gp + groups[k]
	}
	return &authn.Identity{
		User:      cfg.usernamePrefix() + name,
		UID:       idt.Subject,
		Groups:    groups,
		Source:    cfg.Source(),
		ExpiresAt: idt.Expiry,
	}, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
