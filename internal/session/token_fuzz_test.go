package session

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// FuzzVerify hands Verify random bytes and mutations of real tokens. A token is accepted only
// if it is, byte for byte, one the manager minted; everything else is refused with one of the
// session errors, and nothing panics.
func FuzzVerify(f *testing.F) {
	m, _ := newTestManager(f, nil)
	minted := map[string]Claims{}
	for _, c := range []Claims{
		{User: "alice"},
		{User: "bob", UID: "u-1", Groups: []string{"devs", "ops"}, Source: "ldap:corp",
			Extra: map[string][]string{"kaccess.io/source": {"ldap"}}},
		{User: "système:ünïcode", Groups: []string{"a,b", `"quoted"`}},
	} {
		tok, out := mint(f, m, c)
		minted[tok] = out
		f.Add(tok)
		h, p, _ := strings.Cut(tok, ".")
		p, s, _ := strings.Cut(p, ".")
		f.Add(h + "." + p + ".")                  // no signature
		f.Add(h + "." + p)                        // two segments
		f.Add(tok + ".")                          // four segments
		f.Add(tok + "=")                          // padded signature
		f.Add(strings.ToUpper(tok[:1]) + tok[1:]) // a changed header byte
		f.Add(h + "." + p + "." + flipLastBits(s))
		f.Add(h + "." + flipLastBits(p) + "." + s)
		f.Add(`eyJhbGciOiJub25lIn0.` + p + ".")
		f.Add(h + "." + p + "." + s[:10] + "\r\n" + s[10:])
	}
	for _, s := range []string{"", ".", "..", "a.b.c", "\x00", strings.Repeat("A", maxTokenSize+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		got, err := m.Verify(t.Context(), token)
		want, isMinted := minted[token]
		if err != nil {
			if got != nil {
				t.Fatalf("claims returned with error %v", err)
			}
			for _, e := range []error{ErrMalformed, ErrNotSession, ErrBadSignature, ErrUnknownKey, ErrExpired, ErrNotYetValid, ErrRevoked} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("Verify(%q): unexpected error %v", token, err)
		}
		if !isMinted {
			t.Fatalf("Verify accepted %q, which the manager never minted, as %+v", token, got)
		}
		if got.User != want.User || got.SessionID != want.SessionID {
			t.Fatalf("Verify(minted) = %+v, want %+v", got, want)
		}
	})
}

// flipLastBits changes the last character of a base64url segment to the one that decodes to
// the same bytes (only the unused low bits differ), when the segment has such bits.
func flipLastBits(seg string) string {
	if len(seg)%4 == 0 || seg == "" {
		return seg
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	if i < 0 {
		return seg
	}
	return seg[:len(seg)-1] + string(alphabet[i^1])
}

// TestVerifyRefusesNonCanonicalEncoding: a minted token with a segment re-encoded to another
// base64url string of the same bytes (unused low bits set, or padding) is refused: only the
// bytes the manager signed and wrote are a session.
func TestVerifyRefusesNonCanonicalEncoding(t *testing.T) {
	m, _ := newTestManager(t, nil)
	tok, _ := mint(t, m, Claims{User: "alice"})
	h, rest, _ := strings.Cut(tok, ".")
	p, s, _ := strings.Cut(rest, ".")
	if _, err := base64.RawURLEncoding.DecodeString(flipLastBits(s)); err != nil {
		t.Fatalf("the variant must decode for the test to mean anything: %v", err)
	}
	for name, variant := range map[string]string{
		"signature low bits":   h + "." + p + "." + flipLastBits(s),
		"payload low bits":     h + "." + flipLastBits(p) + "." + s,
		"header low bits":      flipLastBits(h) + "." + p + "." + s,
		"padded signature":     tok + "==",
		"newline in signature": h + "." + p + "." + s[:10] + "\n" + s[10:],
		"CR in header":         h[:5] + "\r" + h[5:] + "." + p + "." + s,
	} {
		if variant == tok {
			continue // that segment has no unused bits
		}
		if _, err := m.Verify(t.Context(), variant); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Verify = %v, want ErrMalformed", name, err)
		}
	}
}
