package oidc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/oidc"
)

// FuzzAuthenticateToken hands the authenticator random strings and mutations of real ID
// tokens (RSA and EC keys). Only a token the issuer signed, unchanged, is accepted; anything
// else is "not mine" or a rejection, and nothing panics.
func FuzzAuthenticateToken(f *testing.F) {
	ti := newTestIssuer(f)
	clock := newFakeClock()
	a, err := oidc.New(context.Background(), []oidc.Config{testConfig(ti)}, oidc.Options{Logger: quiet, Now: clock.Now, CacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = a.Close() })
	issued := map[string]bool{}
	for _, kid := range []string{"rsa-1", "ec-1"} {
		tok := ti.sign(f, kid, ti.claims(clock.Now()))
		if _, ok, err := a.AuthenticateToken(context.Background(), tok); !ok || err != nil {
			f.Fatalf("a real token of %s: %v %v", kid, ok, err)
		}
		issued[tok] = true
		h, rest, _ := strings.Cut(tok, ".")
		p, s, _ := strings.Cut(rest, ".")
		f.Add(tok)
		f.Add(h + "." + p + ".")
		f.Add(tok + "=")
		f.Add(h + "." + p + "." + lowBits(s))
		f.Add(lowBits(h) + "." + p + "." + s)
		f.Add(h + "." + p + "." + s[:8] + "\n" + s[8:])
		f.Add(`eyJhbGciOiJub25lIn0.` + p + ".")
	}
	for _, s := range []string{"", ".", "..", "a.b.c", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, ok, err := a.AuthenticateToken(context.Background(), token)
		if err != nil {
			var rej *authn.RejectedError
			if !errors.As(err, &rej) && !errors.Is(err, authn.ErrInvalidCredentials) {
				t.Logf("error of another kind: %v", err)
			}
			if id != nil {
				t.Fatalf("identity returned with error %v", err)
			}
			return
		}
		if ok && !issued[token] {
			t.Fatalf("accepted %q, which the issuer never signed, as %+v", token, id)
		}
	})
}

// lowBits changes the last character of a base64url segment to its neighbour that decodes to
// the same bytes (unused low bits set), when the segment has unused bits.
func lowBits(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if seg == "" || len(seg)%4 == 0 {
		return seg
	}
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[i^1])
}

// TestNonCanonicalTokenRejected: a real token respelled (same bytes, another encoding) is a
// malformed token, not the issuer's.
func TestNonCanonicalTokenRejected(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newFakeClock()
	a := newAuthenticator(t, clock, testConfig(ti))
	tok := ti.sign(t, "rsa-1", ti.claims(clock.Now()))
	h, rest, _ := strings.Cut(tok, ".")
	p, s, _ := strings.Cut(rest, ".")
	for name, variant := range map[string]string{
		"signature low bits": h + "." + p + "." + lowBits(s),
		"header low bits":    lowBits(h) + "." + p + "." + s,
		"LF in signature":    h + "." + p + "." + s[:8] + "\n" + s[8:],
		"padded signature":   tok + "==",
	} {
		if variant == tok {
			continue
		}
		_, ok, err := a.AuthenticateToken(context.Background(), variant)
		if ok {
			t.Errorf("%s: accepted", name)
			continue
		}
		wantReason(t, err, oidc.ReasonMalformed, variant)
	}
}
