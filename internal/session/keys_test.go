package session

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestNewManagerCreatesKeysDirAndKey(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, nil)
	info, err := os.Stat(m.cfg.KeysDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("keys dir mode = %04o, want 0700", perm)
	}
	keys := m.Keys()
	if len(keys) != 1 || !keys[0].Signing || !keys[0].Created.Equal(testStart) {
		t.Fatalf("Keys() = %+v, want one signing key created at %s", keys, testStart)
	}
	if !strings.HasPrefix(keys[0].KID, "20261125T114300Z-") {
		t.Errorf("kid %q is not time-sortable", keys[0].KID)
	}
	info, err = os.Stat(filepath.Join(m.cfg.KeysDir, keys[0].KID+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", perm)
	}
}

func TestLoadKeysRefusesBadFiles(t *testing.T) {
	t.Parallel()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})

	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the offending file name
		wantErr string
	}{
		{"world readable", func(t *testing.T, dir string) string {
			k := writeTestKey(t, dir, "20261125T114300Z-0000000a")
			if err := os.Chmod(filepath.Join(dir, k+".pem"), 0o644); err != nil {
				t.Fatal(err)
			}
			return k + ".pem"
		}, "lets others read it"},
		{"group writable", func(t *testing.T, dir string) string {
			k := writeTestKey(t, dir, "20261125T114300Z-0000000b")
			if err := os.Chmod(filepath.Join(dir, k+".pem"), 0o660); err != nil {
				t.Fatal(err)
			}
			return k + ".pem"
		}, "non-owners write it"},
		{"not Ed25519", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "ec.pem"), ecPEM)
			return "ec.pem"
		}, "not an Ed25519 key"},
		{"not PEM", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "junk.pem"), []byte("hello"))
			return "junk.pem"
		}, "PEM"},
		{"bad kid in file name", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "bad kid.pem"), ecPEM)
			return "bad kid.pem"
		}, "name must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := tt.setup(t, dir)
			_, err := NewManager(Config{Issuer: testIssuer, KeysDir: dir})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), file) {
				t.Fatalf("NewManager error = %v, want one naming %s and saying %q", err, file, tt.wantErr)
			}
		})
	}
}

func TestLoadKeysSkipsNonKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kid := writeTestKey(t, dir, "20261125T114300Z-0000000c")
	// What a Secret volume and an interrupted write leave next to the keys.
	if err := os.Mkdir(filepath.Join(dir, "..data"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ".key-123.tmp"), []byte("partial"))
	writeFile(t, filepath.Join(dir, "README"), []byte("not a key"))
	m, err := NewManager(Config{Issuer: testIssuer, KeysDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if keys := m.Keys(); len(keys) != 1 || keys[0].KID != kid {
		t.Fatalf("Keys() = %+v, want only %s", keys, kid)
	}
}

func TestRotate(t *testing.T) {
	t.Parallel()
	m, clk := newTestManager(t, nil)
	first := signingKID(m)
	before, _ := mint(t, m, Claims{User: "alice"})

	clk.Step(time.Minute)
	kid, err := m.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if kid <= first || signingKID(m) != kid {
		t.Fatalf("Rotate = %s after %s; signer = %s", kid, first, signingKID(m))
	}
	after, _ := mint(t, m, Claims{User: "alice"})
	if got := headerOf(t, after)["kid"]; got != kid {
		t.Errorf("new token kid = %v, want %s", got, kid)
	}
	for name, tok := range map[string]string{"before": before, "after": after} {
		if _, err := m.Verify(t.Context(), tok); err != nil {
			t.Errorf("token minted %s Rotate: %v", name, err)
		}
	}

	// Rotating again within the same second (or with a clock behind the
	// newest kid) must still produce a kid that sorts last.
	again, err := m.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Step(-time.Hour)
	third, err := m.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	kids := kidsOf(m.Keys())
	if !slices.IsSorted(kids) || len(kids) != 4 || kids[2] != again || kids[3] != third || signingKID(m) != third {
		t.Fatalf("kids %v; again %s, third %s", kids, again, third)
	}
}

func TestSharedKeysDir(t *testing.T) {
	t.Parallel()
	clk := testingclock.NewFakeClock(testStart)
	dir := filepath.Join(t.TempDir(), "keys")
	newManager := func() *Manager {
		m, err := NewManager(Config{Issuer: testIssuer, KeysDir: dir, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a := newManager()
	b := newManager()
	if signingKID(a) != signingKID(b) {
		t.Fatalf("replicas disagree on the signer: %s vs %s", signingKID(a), signingKID(b))
	}
	verify := func(m *Manager, tok string, want error) {
		t.Helper()
		if _, err := m.Verify(t.Context(), tok); !errors.Is(err, want) {
			t.Fatalf("Verify = %v, want %v", err, want)
		}
	}
	verify(b, mint2(t, a), nil)

	// A rotates; B picks up the new key on the first unknown kid.
	clk.Step(time.Minute)
	rotated, err := a.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	verify(b, mint2(t, a), nil)
	if signingKID(b) != rotated {
		t.Errorf("B signs with %s, want the rotated %s", signingKID(b), rotated)
	}

	// Another rotation within 5 s of B's last reload: not picked up yet.
	clk.Step(time.Second)
	if _, err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	tok := mint2(t, a)
	verify(b, tok, ErrUnknownKey)
	clk.Step(reloadInterval)
	verify(b, tok, nil)
}

func TestPruneKeys(t *testing.T) {
	t.Parallel()
	const rotateEvery = 24 * time.Hour
	grace := rotateEvery + DefaultTTL + DefaultLeeway
	m, clk := newTestManager(t, func(c *Config) { c.RotateEvery = rotateEvery })
	k0 := signingKID(m)
	tok0 := mint2(t, m)

	// Only one key: however old, the signer stays.
	clk.Step(100 * 24 * time.Hour)
	if removed, err := m.PruneKeys(); err != nil || len(removed) != 0 {
		t.Fatalf("PruneKeys with only the signer = %v, %v", removed, err)
	}

	// k0 retires now, when k1 is created; old as it is, it must verify
	// for another RotateEvery+TTL+Leeway.
	k1, err := m.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Step(grace - time.Second)
	if removed, err := m.PruneKeys(); err != nil || len(removed) != 0 {
		t.Fatalf("PruneKeys before the grace period = %v, %v", removed, err)
	}
	clk.Step(2 * time.Second)
	removed, err := m.PruneKeys()
	if err != nil || !slices.Equal(removed, []string{k0}) {
		t.Fatalf("PruneKeys = %v, %v; want [%s]", removed, err, k0)
	}
	if kids := kidsOf(m.Keys()); !slices.Equal(kids, []string{k1}) {
		t.Errorf("keys left: %v, want [%s]", kids, k1)
	}
	if _, err := os.Stat(filepath.Join(m.cfg.KeysDir, k0+".pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pruned key file still there: %v", err)
	}
	// Long expired anyway; now also unknown.
	if _, err := m.Verify(t.Context(), tok0); err == nil {
		t.Error("token of a pruned key verified")
	}
}

func TestRemovedKeyVoidsCachedTokens(t *testing.T) {
	t.Parallel()
	m, clk := newTestManager(t, nil)
	old := signingKID(m)
	tok := mint2(t, m)
	if _, err := m.Verify(t.Context(), tok); err != nil { // now cached
		t.Fatal(err)
	}
	clk.Step(time.Minute)
	if _, err := m.Rotate(); err != nil {
		t.Fatal(err)
	}
	// An operator deletes a compromised key; the next reload drops it.
	if err := os.Remove(filepath.Join(m.cfg.KeysDir, old+".pem")); err != nil {
		t.Fatal(err)
	}
	if err := m.maintain(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(t.Context(), tok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify after key removal = %v, want ErrUnknownKey", err)
	}
}

func TestMaintainRotatesOnSchedule(t *testing.T) {
	t.Parallel()
	const rotateEvery = 24 * time.Hour
	m, clk := newTestManager(t, func(c *Config) { c.RotateEvery = rotateEvery })
	k0 := signingKID(m)
	steps := []struct {
		step     time.Duration
		wantKeys int
	}{
		{rotateEvery - time.Second, 1}, // not due
		{time.Second, 2},               // due: k1 signs, k0 kept
		{time.Hour, 2},                 // nothing to do
		{rotateEvery - time.Hour, 3},   // k2; k0 retired only a day ago
		// k3; k0 and k1 retired more than RotateEvery+TTL+Leeway ago.
		{rotateEvery + DefaultTTL + time.Hour, 2},
	}
	for i, s := range steps {
		clk.Step(s.step)
		if err := m.maintain(); err != nil {
			t.Fatalf("step %d: maintain: %v", i, err)
		}
		if got := len(m.Keys()); got != s.wantKeys {
			t.Fatalf("step %d: %d keys (%v), want %d", i, got, kidsOf(m.Keys()), s.wantKeys)
		}
	}
	if slices.Contains(kidsOf(m.Keys()), k0) {
		t.Errorf("first key %s never pruned", k0)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, func(c *Config) { c.RotateEvery = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func writeTestKey(t *testing.T, dir, kid string) string {
	t.Helper()
	created, _ := kidTime(kid)
	if _, err := writeKey(dir, kid, created); err != nil {
		t.Fatal(err)
	}
	return kid
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func kidsOf(keys []KeyInfo) []string {
	var kids []string
	for _, k := range keys {
		kids = append(kids, k.KID)
	}
	return kids
}

// A Secret volume with fsGroup gives a non-root gateway its keys as 0440: accepted.
func TestKeyFileReadableByGroupIsAccepted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kid := writeTestKey(t, dir, "20261125T114300Z-0000000c")
	if err := os.Chmod(filepath.Join(dir, kid+".pem"), 0o440); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Issuer: "kaccess", KeysDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if keys := m.Keys(); len(keys) != 1 || keys[0].KID != kid {
		t.Fatalf("keys = %+v", keys)
	}
}
