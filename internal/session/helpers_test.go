package session

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

const testIssuer = "https://kaccess.example.test"

var testStart = time.Date(2026, 11, 25, 11, 43, 0, 0, time.UTC)

// newTestManager returns a Manager on a fresh keys dir driven by a fake
// clock. mod may adjust the config before the Manager is built.
func newTestManager(t testing.TB, mod func(*Config)) (*Manager, *testingclock.FakeClock) {
	t.Helper()
	clk := testingclock.NewFakeClock(testStart)
	cfg := Config{Issuer: testIssuer, KeysDir: filepath.Join(t.TempDir(), "keys"), Clock: clk,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return m, clk
}

func mint(t testing.TB, m *Manager, c Claims) (string, Claims) {
	t.Helper()
	tok, out, err := m.Mint(t.Context(), c)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok, out
}

func b64JSON(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// validPayload is a claim set the manager would accept, for hand-made tokens.
func validPayload(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "sub": "alice", "jti": "0123456789abcdef0123456789abcdef",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// signWithManagerKey signs an arbitrary payload with m's signing key, the
// header being what m would write.
func signWithManagerKey(t testing.TB, m *Manager, payload map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := m.keys.Load().signing().signer.Sign(raw)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRaw builds a compact JWS with any header, signed with an Ed25519 key.
func signRaw(t testing.TB, priv ed25519.PrivateKey, header, payload map[string]any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

func headerOf(t testing.TB, token string) map[string]any {
	t.Helper()
	seg, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func signingKID(m *Manager) string { return m.keys.Load().signing().kid }
