package testenv_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// The provider starts, logs users in through its real login page, and cleans up after itself.
func TestOIDCProvider(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := testenv.StartOIDCProvider(ctx, testenv.OIDCProviderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
			t.Errorf("state dir %s left behind: %v", p.Dir, err)
		}
	}()
	if !strings.HasPrefix(p.Issuer, "https://127.0.0.1:") {
		t.Errorf("issuer %s", p.Issuer)
	}
	tok, err := p.Login(ctx, p.User, testenv.OIDCClientID)
	if err != nil {
		t.Fatal(err)
	}
	claims := payload(t, tok.IDToken)
	if claims["iss"] != p.Issuer || claims["sub"] != p.User.Subject || claims["aud"] == nil || claims["email"] != p.User.Email {
		t.Errorf("claims %v", claims)
	}
	if g, _ := claims["groups"].([]any); len(g) != len(p.User.Groups) {
		t.Errorf("groups %v, want %v", claims["groups"], p.User.Groups)
	}
	if tok.RefreshToken == "" || tok.AccessToken == "" {
		t.Errorf("tokens %+v", tok)
	}

	wrong := p.User
	wrong.Password = "not-the-password"
	if _, err := p.Login(ctx, wrong, testenv.OIDCClientID); err == nil {
		t.Error("a wrong password logged in")
	}
}

func payload(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
