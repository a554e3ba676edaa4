package oidc_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// testIssuer is an OpenID provider served by an httptest TLS server: discovery and JWKS, with
// keys that can be added (rotation) and an outage switch. It signs tokens with its keys.
type testIssuer struct {
	srv    *httptest.Server
	URL    string
	CAFile string

	mu        sync.Mutex
	keys      map[string]signingKey // by kid
	published []string              // kids in the JWKS
	down      atomic.Bool
	jwksHits  atomic.Int64
}

type signingKey struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{keys: map[string]signingKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if ti.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": ti.URL, "jwks_uri": ti.URL + "/keys",
			"authorization_endpoint": ti.URL + "/auth", "token_endpoint": ti.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		if ti.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		ti.jwksHits.Add(1)
		ti.mu.Lock()
		var set jose.JSONWebKeySet
		for _, kid := range ti.published {
			k := ti.keys[kid]
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
		}
		ti.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	ti.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ti.srv.Close)
	ti.URL = ti.srv.URL
	ti.CAFile = filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ti.srv.Certificate().Raw})
	if err := os.WriteFile(ti.CAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ti.addKey(t, "rsa-1", jose.RS256, true)
	ti.addKey(t, "ec-1", jose.ES256, true)
	return ti
}

// addKey makes a key; publish puts it in the JWKS (else tokens signed with it are forgeries).
func (ti *testIssuer) addKey(t testing.TB, kid string, alg jose.SignatureAlgorithm, publish bool) {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys[kid] = signingKey{alg: alg, priv: priv}
	if publish {
		ti.published = append(ti.published, kid)
	}
}

func (ti *testIssuer) publish(kid string) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.published = append(ti.published, kid)
}

// sign returns a compact JWS of claims signed with key kid.
func (ti *testIssuer) sign(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	ti.mu.Lock()
	k, ok := ti.keys[kid]
	ti.mu.Unlock()
	if !ok {
		t.Fatalf("no key %s", kid)
	}
	return signWith(t, k.alg, jose.JSONWebKey{Key: k.priv, KeyID: kid}, claims)
}

func signWith(t testing.TB, alg jose.SignatureAlgorithm, key any, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims returns a valid ID token's claims for audience "kaccess" at now, valid for an hour.
func (ti *testIssuer) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss": ti.URL, "sub": "u-123", "aud": "kaccess",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"email": "alice@example.com", "email_verified": true,
		"groups": []string{"devs", "ops"},
	}
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
