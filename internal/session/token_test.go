package session

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestMintVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      Claims
		wantExp time.Time
	}{
		{
			name: "every claim",
			in: Claims{
				User: "alice@corp.example", UID: "S-1-5-21-1004", Groups: []string{"ldap:admins", "ldap:dev"},
				Extra:  map[string][]string{"department": {"platform"}, "scopes": {"a", "b"}},
				Source: "ldap:corp",
			},
			wantExp: testStart.Add(DefaultTTL),
		},
		{name: "user only", in: Claims{User: "bob"}, wantExp: testStart.Add(DefaultTTL)},
		{
			name:    "earlier expiry kept, truncated to seconds",
			in:      Claims{User: "carol", ExpiresAt: testStart.Add(time.Hour + 500*time.Millisecond)},
			wantExp: testStart.Add(time.Hour),
		},
		{
			name:    "later expiry capped at TTL",
			in:      Claims{User: "dave", ExpiresAt: testStart.Add(48 * time.Hour)},
			wantExp: testStart.Add(DefaultTTL),
		},
		{
			name:    "caller's session id and issued-at are replaced",
			in:      Claims{User: "erin", SessionID: "chosen", IssuedAt: testStart.Add(-time.Hour)},
			wantExp: testStart.Add(DefaultTTL),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, _ := newTestManager(t, nil)
			tok, minted := mint(t, m, tt.in)

			want := tt.in
			want.SessionID, want.IssuedAt, want.ExpiresAt = minted.SessionID, testStart, tt.wantExp
			if !reflect.DeepEqual(minted, want) {
				t.Fatalf("minted claims:\n got %+v\nwant %+v", minted, want)
			}
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(minted.SessionID) {
				t.Errorf("session id %q is not 128 bits of hex", minted.SessionID)
			}
			if h := headerOf(t, tok); h["kid"] != signingKID(m) || h["alg"] != "EdDSA" || h["typ"] != tokenType {
				t.Errorf("header = %v", h)
			}
			for _, pass := range []string{"uncached", "cached"} {
				got, err := m.Verify(t.Context(), tok)
				if err != nil {
					t.Fatalf("%s Verify: %v", pass, err)
				}
				if !reflect.DeepEqual(*got, minted) {
					t.Fatalf("%s Verify:\n got %+v\nwant %+v", pass, *got, minted)
				}
				// Changing a result must not change what the next caller sees.
				got.User = "mallory"
				if got.Groups != nil {
					got.Groups[0] = "system:masters"
				}
				if got.Extra != nil {
					got.Extra["department"][0] = "security"
				}
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, nil)
	tests := []struct {
		name string
		in   Claims
	}{
		{"no user", Claims{Groups: []string{"g"}}},
		{"expiry in the past", Claims{User: "alice", ExpiresAt: testStart.Add(-time.Minute)}},
		{"expiry now", Claims{User: "alice", ExpiresAt: testStart}},
		{"token too large", Claims{User: "alice", Groups: []string{strings.Repeat("g", maxTokenSize)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tok, _, err := m.Mint(t.Context(), tt.in); err == nil {
				t.Fatalf("Mint succeeded: %.40s...", tok)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	t.Parallel()
	type env struct {
		m   *Manager
		clk *testingclock.FakeClock
	}
	tests := []struct {
		name  string
		token func(t *testing.T, e env) string
		want  error
	}{
		{"empty", func(*testing.T, env) string { return "" }, ErrMalformed},
		{"garbage", func(*testing.T, env) string { return "not a token" }, ErrMalformed},
		{"two parts", func(*testing.T, env) string { return "eyJhbGciOiJFZERTQSJ9.e30" }, ErrMalformed},
		{"four parts", func(t *testing.T, e env) string { return mint2(t, e.m) + ".x" }, ErrMalformed},
		{"not base64", func(*testing.T, env) string { return "!!!.@@@.###" }, ErrMalformed},
		{"payload not JSON", func(t *testing.T, _ env) string {
			return b64JSON(t, map[string]any{"alg": "EdDSA"}) + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".c2ln"
		}, ErrMalformed},
		{"huge", func(*testing.T, env) string { return strings.Repeat("a", maxTokenSize+1) }, ErrMalformed},
		{"expired", func(t *testing.T, e env) string {
			tok := mint2(t, e.m)
			e.clk.Step(DefaultTTL + DefaultLeeway + time.Second)
			return tok
		}, ErrExpired},
		{"not yet valid", func(t *testing.T, e env) string {
			tok := mint2(t, e.m)
			e.clk.Step(-DefaultLeeway - time.Second) // another replica's clock runs ahead
			return tok
		}, ErrNotYetValid},
		{"revoked", func(t *testing.T, e env) string {
			tok, c := mint(t, e.m, Claims{User: "alice"})
			if err := e.m.Revoke(t.Context(), c.SessionID, c.ExpiresAt); err != nil {
				t.Fatal(err)
			}
			return tok
		}, ErrRevoked},
		{"revoked after it was cached", func(t *testing.T, e env) string {
			tok, c := mint(t, e.m, Claims{User: "alice"})
			if _, err := e.m.Verify(t.Context(), tok); err != nil {
				t.Fatal(err)
			}
			if err := e.m.Revoke(t.Context(), c.SessionID, time.Time{}); err != nil {
				t.Fatal(err)
			}
			return tok
		}, ErrRevoked},
		{"expired after it was cached", func(t *testing.T, e env) string {
			tok := mint2(t, e.m)
			if _, err := e.m.Verify(t.Context(), tok); err != nil {
				t.Fatal(err)
			}
			e.clk.Step(DefaultTTL + DefaultLeeway + time.Second)
			return tok
		}, ErrExpired},
		{"tampered payload", func(t *testing.T, e env) string {
			parts := strings.Split(mint2(t, e.m), ".")
			p := validPayload(testStart)
			p["sub"] = "admin"
			parts[1] = b64JSON(t, p)
			return strings.Join(parts, ".")
		}, ErrBadSignature},
		{"tampered signature", func(t *testing.T, e env) string {
			tok := []byte(mint2(t, e.m))
			if tok[len(tok)-5] == 'A' {
				tok[len(tok)-5] = 'B'
			} else {
				tok[len(tok)-5] = 'A'
			}
			return string(tok)
		}, ErrBadSignature},
		{"signed by another key under the same kid", func(t *testing.T, e env) string {
			dir := filepath.Join(t.TempDir(), "other")
			if err := ensureKeysDir(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := writeKey(dir, signingKID(e.m), testStart); err != nil {
				t.Fatal(err)
			}
			other, err := NewManager(Config{Issuer: testIssuer, KeysDir: dir, Clock: e.clk})
			if err != nil {
				t.Fatal(err)
			}
			return mint2(t, other)
		}, ErrBadSignature},
		{"unknown kid", func(t *testing.T, e env) string {
			other, _ := newTestManager(t, nil)
			return mint2(t, other)
		}, ErrUnknownKey},
		{"another issuer", func(t *testing.T, e env) string {
			other, _ := newTestManager(t, func(c *Config) { c.Issuer = "https://idp.example.test" })
			return mint2(t, other)
		}, ErrNotSession},
		{"another issuer, RS256 ID token shape", func(t *testing.T, _ env) string {
			p := validPayload(testStart)
			p["iss"] = "https://idp.example.test"
			return b64JSON(t, map[string]any{"alg": "RS256", "kid": "idp-1"}) + "." + b64JSON(t, p) + ".c2lnbmF0dXJl"
		}, ErrNotSession},
		{"alg none", func(t *testing.T, e env) string {
			h := map[string]any{"alg": "none", "typ": tokenType, "kid": signingKID(e.m)}
			return b64JSON(t, h) + "." + b64JSON(t, validPayload(testStart)) + "."
		}, ErrMalformed},
		{"HS256 keyed with the public key", func(t *testing.T, e env) string {
			h := map[string]any{"alg": "HS256", "typ": tokenType, "kid": signingKID(e.m)}
			input := b64JSON(t, h) + "." + b64JSON(t, validPayload(testStart))
			mac := hmac.New(sha256.New, e.m.keys.Load().signing().public)
			mac.Write([]byte(input))
			return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		}, ErrMalformed},
		{"wrong typ", func(t *testing.T, e env) string {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			return signRaw(t, priv, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": signingKID(e.m)}, validPayload(testStart))
		}, ErrMalformed},
		{"no kid", func(t *testing.T, e env) string {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			return signRaw(t, priv, map[string]any{"alg": "EdDSA", "typ": tokenType}, validPayload(testStart))
		}, ErrMalformed},
		{"our key, no exp", func(t *testing.T, e env) string {
			p := validPayload(testStart)
			delete(p, "exp")
			return signWithManagerKey(t, e.m, p)
		}, ErrMalformed},
		{"our key, no sub", func(t *testing.T, e env) string {
			p := validPayload(testStart)
			delete(p, "sub")
			return signWithManagerKey(t, e.m, p)
		}, ErrMalformed},
		{"our key, nbf in the future", func(t *testing.T, e env) string {
			p := validPayload(testStart)
			p["nbf"] = testStart.Add(time.Hour).Unix()
			return signWithManagerKey(t, e.m, p)
		}, ErrNotYetValid},
		{"our key, exp overflowing", func(t *testing.T, e env) string {
			p := validPayload(testStart)
			p["exp"] = 1e300
			return signWithManagerKey(t, e.m, p)
		}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, clk := newTestManager(t, nil)
			tok := tt.token(t, env{m, clk})
			got, err := m.Verify(t.Context(), tok)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %+v, %v; want %v", got, err, tt.want)
			}
			if got != nil {
				t.Errorf("Verify returned claims with an error: %+v", got)
			}
			for _, part := range strings.Split(tok, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q contains part of the token", err)
				}
			}
		})
	}
}

// mint2 mints a token for a fixed user and returns just the token.
func mint2(t testing.TB, m *Manager) string {
	t.Helper()
	tok, _ := mint(t, m, Claims{User: "alice", Groups: []string{"dev"}})
	return tok
}

func TestVerifyLeeway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		step time.Duration
		want error
	}{
		{"just before exp", DefaultTTL - time.Second, nil},
		{"within leeway after exp", DefaultTTL + DefaultLeeway, nil},
		{"past leeway", DefaultTTL + DefaultLeeway + time.Second, ErrExpired},
		{"clock behind within leeway", -DefaultLeeway, nil},
		{"clock behind past leeway", -DefaultLeeway - time.Second, ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, clk := newTestManager(t, nil)
			tok := mint2(t, m)
			clk.Step(tt.step)
			if _, err := m.Verify(t.Context(), tok); !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRevokeOutlivesLeeway(t *testing.T) {
	t.Parallel()
	m, clk := newTestManager(t, nil)
	tok, c := mint(t, m, Claims{User: "alice"})
	if err := m.Revoke(t.Context(), c.SessionID, c.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	// Past exp but inside the leeway the token is otherwise still accepted.
	clk.SetTime(c.ExpiresAt.Add(DefaultLeeway))
	if _, err := m.Verify(t.Context(), tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify: %v, want ErrRevoked", err)
	}
	if err := m.Revoke(t.Context(), "", time.Time{}); err == nil {
		t.Error("Revoke of an empty session id succeeded")
	}
}
