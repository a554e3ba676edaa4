package clickhouse

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg, err := Config{CAFile: ca}.tlsConfig()
	if err != nil || cfg == nil || cfg.RootCAs == nil {
		t.Fatalf("tlsConfig with a CA file: %+v, %v", cfg, err)
	}
	if cfg, err := (Config{}).tlsConfig(); cfg != nil || err != nil {
		t.Fatalf("no TLS asked for, got %+v, %v", cfg, err)
	}
	for file, want := range map[string]string{notPEM: "holds no PEM certificate", filepath.Join(dir, "missing"): "caFile"} {
		if _, err := (Config{CAFile: file}).tlsConfig(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CA file %s: %v, want an error containing %q", filepath.Base(file), err, want)
		}
	}
}
