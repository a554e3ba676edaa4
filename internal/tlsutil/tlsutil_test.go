package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsureSelfSignedKeepsCAAndFollowsHosts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cert1, key1, ca1, err := EnsureSelfSigned(dir, []string{"localhost", "127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, cert1, key1, ca1, "localhost")
	before, _ := os.ReadFile(cert1)

	// Same hosts: nothing is remade.
	_, _, ca2, err := EnsureSelfSigned(dir, []string{"127.0.0.1", "localhost"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(cert1); string(after) != string(before) || string(ca2) != string(ca1) {
		t.Fatal("certificate remade although nothing changed")
	}
	// A new host: new serving certificate, same CA, so pinned clients keep working.
	cert3, key3, ca3, err := EnsureSelfSigned(dir, []string{"localhost", "gw.example.com"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if string(ca3) != string(ca1) {
		t.Fatal("CA changed")
	}
	verify(t, cert3, key3, ca3, "gw.example.com")
	// Near expiry: renewed.
	_, _, _, err = EnsureSelfSigned(dir, []string{"localhost", "gw.example.com"}, now.Add(servingValidity-renewBefore+time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(cert3); string(after) == string(before) {
		t.Fatal("serving certificate near expiry was not renewed")
	}
	if st, _ := os.Stat(filepath.Join(dir, caKey)); st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, want 0600", st.Mode().Perm())
	}
}

func TestEnsureSelfSignedRefusesBrokenCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, _, _, err := EnsureSelfSigned(dir, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, caKey), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := EnsureSelfSigned(dir, []string{"localhost"}, time.Now()); err == nil {
		t.Fatal("a CA with a broken key was accepted")
	}
}

func verify(t *testing.T, certFile, keyFile string, caPEM []byte, host string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM unreadable")
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: leaf.NotBefore.Add(2 * time.Hour)}); err != nil {
		t.Fatalf("serving certificate does not verify for %s: %v", host, err)
	}
	if b, _ := pem.Decode(caPEM); b == nil {
		t.Fatal("CA is not PEM")
	}
}

// NotAfter is the served certificate's expiry and follows a renewal on disk.
func TestReloaderNotAfterFollowsRenewal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	certFile, keyFile, _, err := EnsureSelfSigned(dir, []string{"localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReloader(certFile, keyFile, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	if got := r.NotAfter(); !got.Equal(now.Add(servingValidity)) {
		t.Fatalf("NotAfter %v, want %v", got, now.Add(servingValidity))
	}
	renewedAt := now.Add(servingValidity - renewBefore + time.Hour)
	if _, _, _, err := EnsureSelfSigned(dir, []string{"localhost"}, renewedAt); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute) // newer than the first load, whatever the file system's clock granularity
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, future, future); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	r.checkedAt = time.Time{}
	r.mu.Unlock()
	if got := r.NotAfter(); !got.Equal(renewedAt.Add(servingValidity)) {
		t.Fatalf("NotAfter after renewal %v, want %v", got, renewedAt.Add(servingValidity))
	}
}
