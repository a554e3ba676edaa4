package oidc_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/kaccess/kaccess/internal/authn/oidc"
)

// BenchmarkVerifyCached is the cost per request of an ID token already verified once.
func BenchmarkVerifyCached(b *testing.B) {
	ti := newTestIssuer(b)
	clock := newFakeClock()
	a := newAuthenticator(b, clock, testConfig(ti))
	tok := ti.sign(b, "rsa-1", ti.claims(clock.Now()))
	ctx := context.Background()
	if _, ok, err := a.AuthenticateToken(ctx, tok); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok, err := a.AuthenticateToken(ctx, tok); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkVerifyUncached is the cost of a first sight of a token (RS256 signature and
// claims; keys already fetched). The cache is off so every iteration verifies.
func BenchmarkVerifyUncached(b *testing.B) {
	for _, kid := range []string{"rsa-1", "ec-1"} {
		b.Run(fmt.Sprintf("kid=%s", kid), func(b *testing.B) {
			ti := newTestIssuer(b)
			clock := newFakeClock()
			a, err := oidc.New(context.Background(), []oidc.Config{testConfig(ti)}, oidc.Options{Logger: quiet, Now: clock.Now, CacheSize: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = a.Close() })
			tok := ti.sign(b, kid, ti.claims(clock.Now()))
			ctx := context.Background()
			if _, ok, err := a.AuthenticateToken(ctx, tok); !ok || err != nil {
				b.Fatal(ok, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok, err := a.AuthenticateToken(ctx, tok); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
