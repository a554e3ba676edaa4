package oidc_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/oidc"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig(ti *testIssuer) oidc.Config {
	return oidc.Config{Name: "corp", IssuerURL: ti.URL, ClientIDs: []string{"kaccess", "kaccess-cli"}, CAFile: ti.CAFile}
}

func newAuthenticator(t testing.TB, clock *fakeClock, cfgs ...oidc.Config) *oidc.Authenticator {
	t.Helper()
	a, err := oidc.New(context.Background(), cfgs, oidc.Options{Logger: quiet, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// wantReason checks that err is an authn.RejectedError with reason, and that its client
// message never contains the token.
func wantReason(t *testing.T, err error, reason, token string) {
	t.Helper()
	var rej *authn.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("error %v is not a RejectedError (want reason %s)", err, reason)
	}
	if rej.Reason != reason {
		t.Fatalf("reason %q, want %q (error: %v)", rej.Reason, reason, err)
	}
	if rej.Source != "oidc:corp" {
		t.Errorf("source %q", rej.Source)
	}
	if rej.Message == "" || (token != "" && (strings.Contains(rej.Message, token) || strings.Contains(err.Error(), token))) {
		t.Errorf("client message %q / error %q must be set and must not hold the token", rej.Message, err)
	}
}

func TestAuthenticateToken(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	now := clock.Now()
	withClaims := func(edit func(c map[string]any)) func() string {
		return func() string {
			c := ti.claims(now)
			edit(c)
			return ti.sign(t, "rsa-1", c)
		}
	}
	rsaPub := ti.keys["rsa-1"].priv.Public()
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaPub)

	cfg := testConfig(ti)
	cfg.RequiredClaims = map[string]string{"tenant": "acme"}
	a := newAuthenticator(t, clock, cfg)
	valid := func(c map[string]any) { c["tenant"] = "acme" }

	tests := []struct {
		name       string
		token      func() string
		wantMine   bool
		wantReason string
		wantUser   string
		wantGroups []string
	}{
		{name: "valid RS256", token: withClaims(valid), wantMine: true, wantUser: "corp:u-123", wantGroups: []string{"corp:devs", "corp:ops"}},
		{name: "valid ES256", token: func() string {
			c := ti.claims(now)
			valid(c)
			return ti.sign(t, "ec-1", c)
		}, wantMine: true, wantUser: "corp:u-123", wantGroups: []string{"corp:devs", "corp:ops"}},
		{name: "second client id", token: withClaims(func(c map[string]any) { valid(c); c["aud"] = []string{"x", "kaccess-cli"} }), wantMine: true, wantUser: "corp:u-123", wantGroups: []string{"corp:devs", "corp:ops"}},
		{name: "groups as one string", token: withClaims(func(c map[string]any) { valid(c); c["groups"] = "devs" }), wantMine: true, wantUser: "corp:u-123", wantGroups: []string{"corp:devs"}},
		{name: "no groups claim", token: withClaims(func(c map[string]any) { valid(c); delete(c, "groups") }), wantMine: true, wantUser: "corp:u-123", wantGroups: []string{}},
		{name: "expired within skew", token: withClaims(func(c map[string]any) { valid(c); c["exp"] = now.Add(-10 * time.Second).Unix() }), wantMine: true, wantUser: "corp:u-123", wantGroups: []string{"corp:devs", "corp:ops"}},

		{name: "not a JWT", token: func() string { return "0123456789abcdef" }},
		{name: "opaque dotted token", token: func() string { return "a.b.c" }},
		{name: "unknown issuer", token: withClaims(func(c map[string]any) { valid(c); c["iss"] = "https://other.example.com" })},

		{name: "wrong audience", token: withClaims(func(c map[string]any) { valid(c); c["aud"] = "someone-else" }), wantReason: oidc.ReasonWrongAudience},
		{name: "alg none", token: func() string {
			c := ti.claims(now)
			valid(c)
			return unsigned(t, c)
		}, wantReason: oidc.ReasonBadAlgorithm},
		{name: "HS256 with the public key as secret", token: func() string {
			c := ti.claims(now)
			valid(c)
			return signWith(t, jose.HS256, jose.JSONWebKey{Key: pubDER, KeyID: "rsa-1"}, c)
		}, wantReason: oidc.ReasonBadAlgorithm},
		{name: "RS512 not configured", token: func() string {
			c := ti.claims(now)
			valid(c)
			return signWith(t, jose.RS512, jose.JSONWebKey{Key: ti.keys["rsa-1"].priv, KeyID: "rsa-1"}, c)
		}, wantReason: oidc.ReasonBadAlgorithm},
		{name: "expired", token: withClaims(func(c map[string]any) { valid(c); c["exp"] = now.Add(-time.Minute).Unix() }), wantReason: oidc.ReasonExpired},
		{name: "not yet valid", token: withClaims(func(c map[string]any) { valid(c); c["nbf"] = now.Add(time.Minute).Unix() }), wantReason: oidc.ReasonNotYetValid},
		{name: "issued in the future", token: withClaims(func(c map[string]any) { valid(c); c["iat"] = now.Add(time.Hour).Unix() }), wantReason: oidc.ReasonNotYetValid},
		{name: "tampered payload", token: func() string {
			c := ti.claims(now)
			valid(c)
			tok := ti.sign(t, "rsa-1", c)
			c["groups"] = []string{"system:masters"}
			forged := ti.sign(t, "rsa-1", c)
			parts, forgedParts := strings.Split(tok, "."), strings.Split(forged, ".")
			return parts[0] + "." + forgedParts[1] + "." + parts[2]
		}, wantReason: oidc.ReasonBadSignature},
		{name: "signed by an unpublished key", token: func() string {
			ti.addKey(t, "rogue", jose.RS256, false)
			c := ti.claims(now)
			valid(c)
			return ti.sign(t, "rogue", c)
		}, wantReason: oidc.ReasonBadSignature},
		{name: "corrupt signature encoding", token: func() string {
			c := ti.claims(now)
			valid(c)
			return ti.sign(t, "rsa-1", c) + "!!"
		}, wantReason: oidc.ReasonMalformed},
		{name: "required claim missing", token: withClaims(func(map[string]any) {}), wantReason: oidc.ReasonMissingClaim},
		{name: "required claim wrong value", token: withClaims(func(c map[string]any) { c["tenant"] = "other" }), wantReason: oidc.ReasonMissingClaim},
		{name: "groups wrong type", token: withClaims(func(c map[string]any) { valid(c); c["groups"] = map[string]any{"devs": true} }), wantReason: oidc.ReasonBadClaim},
		{name: "groups list of numbers", token: withClaims(func(c map[string]any) { valid(c); c["groups"] = []int{1, 2} }), wantReason: oidc.ReasonBadClaim},
		{name: "no sub", token: withClaims(func(c map[string]any) { valid(c); delete(c, "sub") }), wantReason: oidc.ReasonMissingClaim},
		{name: "no exp", token: withClaims(func(c map[string]any) { valid(c); delete(c, "exp") }), wantReason: oidc.ReasonMissingClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token()
			id, mine, err := a.AuthenticateToken(context.Background(), token)
			if tc.wantReason != "" {
				if mine || id != nil {
					t.Fatalf("accepted: %+v", id)
				}
				wantReason(t, err, tc.wantReason, token)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if mine != tc.wantMine {
				t.Fatalf("mine = %v, want %v", mine, tc.wantMine)
			}
			if !mine {
				return
			}
			if id.User != tc.wantUser || id.UID != "u-123" || id.Source != "oidc:corp" {
				t.Errorf("identity %+v", id)
			}
			if !slices.Equal(id.Groups, tc.wantGroups) && !(len(id.Groups) == 0 && len(tc.wantGroups) == 0) {
				t.Errorf("groups %q, want %q", id.Groups, tc.wantGroups)
			}
			if id.ExpiresAt.IsZero() {
				t.Errorf("no ExpiresAt")
			}
		})
	}
}

// unsigned returns an "alg: none" JWT.
func unsigned(t testing.TB, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(p) + "."
}

func TestUsernameAndPrefixes(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	now := clock.Now()
	cfg := testConfig(ti)
	cfg.UsernameClaim, cfg.UsernamePrefix, cfg.GroupsPrefix = "email", oidc.NoPrefix, "sso-"
	a := newAuthenticator(t, clock, cfg)

	id, ok, err := a.AuthenticateToken(context.Background(), ti.sign(t, "rsa-1", ti.claims(now)))
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if id.User != "alice@example.com" || !slices.Equal(id.Groups, []string{"sso-devs", "sso-ops"}) {
		t.Errorf("identity %+v", id)
	}

	c := ti.claims(now)
	c["email_verified"] = false
	tok := ti.sign(t, "rsa-1", c)
	_, _, err = a.AuthenticateToken(context.Background(), tok)
	wantReason(t, err, oidc.ReasonBadClaim, tok)

	c = ti.claims(now)
	delete(c, "email")
	tok = ti.sign(t, "rsa-1", c)
	_, _, err = a.AuthenticateToken(context.Background(), tok)
	wantReason(t, err, oidc.ReasonMissingClaim, tok)
}

// A token signed with a key the provider published after the gateway last fetched the JWKS is
// accepted without a restart: go-oidc refetches on an unknown kid.
func TestKeyRotationPickedUp(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	ctx := context.Background()
	if _, ok, err := a.AuthenticateToken(ctx, ti.sign(t, "rsa-1", ti.claims(clock.Now()))); err != nil || !ok {
		t.Fatalf("before rotation: ok=%v err=%v", ok, err)
	}
	hits := ti.jwksHits.Load()

	ti.addKey(t, "rsa-2", jose.RS256, false)
	tok := ti.sign(t, "rsa-2", ti.claims(clock.Now()))
	_, _, err := a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonBadSignature, tok) // not published yet: a forgery

	ti.publish("rsa-2") // the provider rotates
	c := ti.claims(clock.Now())
	c["sub"] = "u-456"
	id, ok, err := a.AuthenticateToken(ctx, ti.sign(t, "rsa-2", c))
	if err != nil || !ok || id.UID != "u-456" {
		t.Fatalf("after rotation: id=%+v ok=%v err=%v", id, ok, err)
	}
	if ti.jwksHits.Load() <= hits {
		t.Errorf("JWKS was not fetched again")
	}
	// Old key still verifies while published.
	c["sub"] = "u-789"
	if _, ok, err := a.AuthenticateToken(ctx, ti.sign(t, "rsa-1", c)); err != nil || !ok {
		t.Fatalf("old key after rotation: ok=%v err=%v", ok, err)
	}
}

// A cached token is served without the provider, and still expires on time.
func TestCacheStillChecksExpiry(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	ctx := context.Background()
	c := ti.claims(clock.Now())
	c["exp"] = clock.Now().Add(5 * time.Minute).Unix()
	tok := ti.sign(t, "rsa-1", c)
	if _, ok, err := a.AuthenticateToken(ctx, tok); err != nil || !ok {
		t.Fatalf("first: ok=%v err=%v", ok, err)
	}
	ti.down.Store(true) // the provider goes away: verified tokens keep working from the cache
	clock.Advance(4 * time.Minute)
	id, ok, err := a.AuthenticateToken(ctx, tok)
	if err != nil || !ok {
		t.Fatalf("cached: ok=%v err=%v", ok, err)
	}
	id.Groups[0] = "mutated" // callers get a copy
	id, _, _ = a.AuthenticateToken(ctx, tok)
	if id.Groups[0] != "corp:devs" {
		t.Errorf("cache entry was mutated through a returned identity: %q", id.Groups)
	}
	clock.Advance(80 * time.Second) // 20 s past exp: within the 30 s skew
	if _, ok, err := a.AuthenticateToken(ctx, tok); err != nil || !ok {
		t.Fatalf("within skew: ok=%v err=%v", ok, err)
	}
	clock.Advance(15 * time.Second)
	_, _, err = a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonExpired, tok)
}

// A provider down when the gateway starts does not stop it; its tokens are refused as
// idp_unavailable until it answers, then accepted without a restart.
func TestIdPDownAtStartThenUp(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	ti.down.Store(true)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	ctx := context.Background()
	tok := ti.sign(t, "rsa-1", ti.claims(clock.Now()))
	_, _, err := a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonIDPUnavailable, tok)
	if a.Ready()["corp"] {
		t.Fatal("ready while the provider is down")
	}

	ti.down.Store(false)
	clock.Advance(oidc.DefaultDiscoveryRetry + time.Second)
	id, ok, err := a.AuthenticateToken(ctx, ti.sign(t, "rsa-1", ti.claims(clock.Now())))
	if err != nil || !ok || id.User != "corp:u-123" {
		t.Fatalf("after the provider came up: id=%+v ok=%v err=%v", id, ok, err)
	}

	// Keys unreachable for a new kid: idp_unavailable, not bad_signature.
	ti.addKey(t, "rsa-3", jose.RS256, true)
	ti.down.Store(true)
	tok = ti.sign(t, "rsa-3", ti.claims(clock.Now()))
	_, _, err = a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonIDPUnavailable, tok)
}

// Tokens of one issuer never verify against another configured issuer's keys.
func TestSeveralIssuers(t *testing.T) {
	t.Parallel()
	one, two := newTestIssuer(t), newTestIssuer(t)
	clock := newFakeClock()
	cfg2 := testConfig(two)
	cfg2.Name = "partner"
	a := newAuthenticator(t, clock, testConfig(one), cfg2)
	ctx := context.Background()
	id, ok, err := a.AuthenticateToken(ctx, two.sign(t, "rsa-1", two.claims(clock.Now())))
	if err != nil || !ok || id.Source != "oidc:partner" || id.User != "partner:u-123" {
		t.Fatalf("id=%+v ok=%v err=%v", id, ok, err)
	}
	// Signed by issuer two's key but claiming issuer one.
	c := two.claims(clock.Now())
	c["iss"] = one.URL
	tok := two.sign(t, "rsa-1", c)
	_, _, err = a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonBadSignature, tok)
}

func TestUnion(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	u := authn.Union{a, authn.TokenFunc(func(context.Context, string) (*authn.Identity, bool, error) {
		return &authn.Identity{User: "next"}, true, nil
	})}
	id, ok, err := u.AuthenticateToken(context.Background(), "opaque-session-token")
	if err != nil || !ok || id.User != "next" {
		t.Fatalf("a token that is not ours must reach the next source: %+v %v %v", id, ok, err)
	}
}

// Forged tokens with key ids the provider never published do not each cost a key-set fetch;
// a real rotation is still picked up once the limit allows.
func TestJWKSRefetchRateLimited(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	ctx := context.Background()
	if _, ok, err := a.AuthenticateToken(ctx, ti.sign(t, "rsa-1", ti.claims(clock.Now()))); err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	ti.addKey(t, "rogue", jose.RS256, false)
	for i := range 20 {
		c := ti.claims(clock.Now())
		c["n"] = i
		tok := ti.sign(t, "rogue", c)
		_, _, err := a.AuthenticateToken(ctx, tok)
		wantReason(t, err, oidc.ReasonBadSignature, tok)
	}
	if hits := ti.jwksHits.Load(); hits > 5 {
		t.Fatalf("%d key-set fetches for 1 good and 20 forged tokens; want at most 5 (the burst)", hits)
	}
	ti.addKey(t, "rsa-2", jose.RS256, true)
	tok := ti.sign(t, "rsa-2", ti.claims(clock.Now()))
	_, _, err := a.AuthenticateToken(ctx, tok)
	wantReason(t, err, oidc.ReasonBadSignature, tok) // the limit holds
	clock.Advance(oidc.DefaultJWKSRefetchInterval)
	// go-oidc hands the result of a fetch to every caller that arrives while that fetch is
	// still registered as in flight, so a call right after the refused one may see its error
	// once: allow a few attempts (no further fetch is spent by them) before failing.
	var ok bool
	for attempt := 0; attempt < 50 && !ok; attempt++ {
		if attempt > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		_, ok, err = a.AuthenticateToken(ctx, tok)
	}
	if err != nil || !ok {
		t.Fatalf("after the interval the rotated key must verify: ok=%v err=%v", ok, err)
	}
	if hits := ti.jwksHits.Load(); hits > 6 {
		t.Fatalf("%d key-set fetches in all; want at most 6 (the burst and one after the interval)", hits)
	}
}

// Many requests at once, fresh and cached, while the provider is first discovered.
func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	var tokens []string
	for i := range 4 {
		c := ti.claims(clock.Now())
		c["sub"] = fmt.Sprintf("u-%d", i)
		tokens = append(tokens, ti.sign(t, "rsa-1", c))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				tok := tokens[(g+i)%len(tokens)]
				if _, ok, err := a.AuthenticateToken(context.Background(), tok); err != nil || !ok {
					errs <- fmt.Errorf("ok=%v err=%v", ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
