package oidc_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/oidc"
	"github.com/kaccess/kaccess/internal/testenv"
)

// providerAuthenticator accepts ID tokens of the shared provider for OIDCClientID only.
func providerAuthenticator(t *testing.T, p *testenv.OIDCProvider, mutate func(*oidc.Config)) *oidc.Authenticator {
	t.Helper()
	cfg := oidc.Config{Name: "zitadel", IssuerURL: p.Issuer, ClientIDs: []string{testenv.OIDCClientID}, CAFile: p.CAFile}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := oidc.New(context.Background(), []oidc.Config{cfg}, oidc.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func login(t *testing.T, p *testenv.OIDCProvider, user testenv.OIDCUser, clientID string) *testenv.OIDCTokens {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := p.Login(ctx, user, clientID)
	if err != nil {
		t.Fatalf("login as %s for %s: %v", user.Username, clientID, err)
	}
	return tok
}

// An ID token from the real login flow (authorization code + PKCE, the browser driven by HTTP
// requests) is accepted with the user's subject, email and groups.
func TestProviderLoginAccepted(t *testing.T) {
	p := testenv.SharedOIDC(t)
	tests := []struct {
		name       string
		user       testenv.OIDCUser
		cfg        func(*oidc.Config)
		wantUser   string
		wantGroups []string
	}{
		{name: "default sub", user: p.User, wantUser: "zitadel:" + p.User.Subject, wantGroups: []string{"zitadel:admins", "zitadel:developers"}},
		{name: "email, no prefix", user: p.User2, cfg: func(c *oidc.Config) { c.UsernameClaim, c.UsernamePrefix = "email", oidc.NoPrefix },
			wantUser: p.User2.Email, wantGroups: []string{"zitadel:developers"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := providerAuthenticator(t, p, tc.cfg)
			tok := login(t, p, tc.user, testenv.OIDCClientID)
			id, ok, err := a.AuthenticateToken(context.Background(), tok.IDToken)
			if err != nil || !ok {
				t.Fatalf("ok=%v err=%v", ok, err)
			}
			if id.User != tc.wantUser || id.UID != tc.user.Subject || !slices.Equal(id.Groups, tc.wantGroups) || id.Source != "oidc:zitadel" {
				t.Errorf("identity %+v", id)
			}
			if d := time.Until(id.ExpiresAt); d < 50*time.Minute || d > 61*time.Minute {
				t.Errorf("expires in %s; the example's ID tokens live an hour", d)
			}
		})
	}
}

// A token the provider issued for another client is refused as wrong_audience; the access
// token (opaque at this provider) is not an ID token at all.
func TestProviderOtherClientRefused(t *testing.T) {
	p := testenv.SharedOIDC(t)
	a := providerAuthenticator(t, p, nil)
	tok := login(t, p, p.User, testenv.OIDCOtherClientID)
	_, ok, err := a.AuthenticateToken(context.Background(), tok.IDToken)
	if ok {
		t.Fatal("a token for another client was accepted")
	}
	var rej *authn.RejectedError
	if !asRejected(err, &rej) || rej.Reason != oidc.ReasonWrongAudience {
		t.Fatalf("want wrong_audience, got %v", err)
	}
	if _, ok, err := a.AuthenticateToken(context.Background(), tok.AccessToken); ok || err != nil {
		t.Fatalf("an opaque access token must be \"not mine\": ok=%v err=%v", ok, err)
	}
}

// The provider rotates its signing key; a token signed with the new key is accepted by the
// running Authenticator (no restart), and tokens of the old key still are.
func TestProviderKeyRotation(t *testing.T) {
	p := testenv.SharedOIDC(t)
	a := providerAuthenticator(t, p, nil)
	ctx := context.Background()
	before := login(t, p, p.User, testenv.OIDCClientID)
	if _, ok, err := a.AuthenticateToken(ctx, before.IDToken); err != nil || !ok {
		t.Fatalf("before rotation: ok=%v err=%v", ok, err)
	}
	kid, err := p.RotateKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := login(t, p, p.User2, testenv.OIDCClientID)
	if got := headerKid(t, after.IDToken); got != kid {
		t.Fatalf("the new token is signed with %q, not the rotated key %q", got, kid)
	}
	id, ok, err := a.AuthenticateToken(ctx, after.IDToken)
	if err != nil || !ok || id.UID != p.User2.Subject {
		t.Fatalf("after rotation: id=%+v ok=%v err=%v", id, ok, err)
	}
	// A fresh authenticator (nothing cached) still accepts the old key's token.
	if _, ok, err := providerAuthenticator(t, p, nil).AuthenticateToken(ctx, before.IDToken); err != nil || !ok {
		t.Fatalf("old key after rotation: ok=%v err=%v", ok, err)
	}
}

// The provider's refresh and device grants give ID tokens the Authenticator accepts: the
// pieces `kaccess login --oidc [--device]` and silent refresh will use.
func TestProviderRefreshAndDevice(t *testing.T) {
	p := testenv.SharedOIDC(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := providerAuthenticator(t, p, func(c *oidc.Config) {
		c.ClientIDs = append(c.ClientIDs, testenv.OIDCDeviceClientID)
	})
	tok := login(t, p, p.User, testenv.OIDCClientID)
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	refreshed, err := p.Refresh(ctx, testenv.OIDCClientID, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if refreshed.IDToken == "" || refreshed.IDToken == tok.IDToken {
		t.Fatal("refresh gave no new ID token")
	}
	if id, ok, err := a.AuthenticateToken(ctx, refreshed.IDToken); err != nil || !ok || id.UID != p.User.Subject {
		t.Fatalf("refreshed: id=%+v ok=%v err=%v", id, ok, err)
	}
	dev, err := p.DeviceLogin(ctx, p.User2)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok, err := a.AuthenticateToken(ctx, dev.IDToken); err != nil || !ok || id.UID != p.User2.Subject {
		t.Fatalf("device: id=%+v ok=%v err=%v", id, ok, err)
	}
}
