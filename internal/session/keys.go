package session

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	keyFileExt = ".pem"
	// kidTimeLayout makes kids sort by creation time, so "greatest kid" means
	// "newest key" on every replica.
	kidTimeLayout = "20060102T150405Z"
	// tokenType is the JWS typ header (RFC 8725 explicit typing), so a JWT
	// made with these keys for another purpose cannot pass as a session.
	tokenType = "kaccess-session+jwt"
)

// kidPattern limits kids to names that are safe as file names and headers.
var kidPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// KeyInfo describes one loaded key, for operators.
type KeyInfo struct {
	KID     string
	Created time.Time
	Signing bool
}

// key is one Ed25519 key pair with its ready-made signer.
type key struct {
	kid     string
	created time.Time
	public  ed25519.PublicKey
	signer  jose.Signer
}

// keySet is immutable once built; the Manager swaps whole sets atomically so
// Verify reads keys without locking.
type keySet struct {
	byKID   map[string]*key
	ordered []*key // ascending kid; the last one signs
}

func (s *keySet) signing() *key { return s.ordered[len(s.ordered)-1] }

func newKeySet(keys []*key) *keySet {
	s := &keySet{byKID: make(map[string]*key, len(keys)), ordered: slices.Clone(keys)}
	slices.SortFunc(s.ordered, func(a, b *key) int { return strings.Compare(a.kid, b.kid) })
	for _, k := range s.ordered {
		s.byKID[k.kid] = k
	}
	return s
}

func newKey(kid string, priv ed25519.PrivateKey, created time.Time) (*key, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(tokenType),
	)
	if err != nil {
		return nil, fmt.Errorf("key %s: signer: %w", kid, err)
	}
	return &key{kid: kid, created: created, public: priv.Public().(ed25519.PublicKey), signer: signer}, nil
}

// loadKeys reads every <kid>.pem in dir. Any bad file fails the whole load:
// silently skipping a key would make its tokens fail later, far from the cause.
func loadKeys(dir string) ([]*key, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read keys dir: %w", err)
	}
	var keys []*key
	for _, e := range entries {
		name := e.Name()
		// Skip temp files and the ..data links of Kubernetes volume mounts.
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, keyFileExt) {
			continue
		}
		k, err := loadKeyFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if k != nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// loadKeyFile returns nil, nil for directories (e.g. "x.pem/").
func loadKeyFile(path string) (*key, error) {
	kid := strings.TrimSuffix(filepath.Base(path), keyFileExt)
	if !kidPattern.MatchString(kid) {
		return nil, fmt.Errorf("key file %s: name must be <kid>.pem with kid matching %s", path, kidPattern)
	}
	// Stat follows symlinks: Secret volumes link each key into ..data/.
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if info.IsDir() {
		return nil, nil
	}
	// Group read is allowed: a Secret volume with fsGroup makes keys 0440 for a non-root
	// gateway. Anything for others, or any write beyond the owner, is refused.
	if perm := info.Mode().Perm(); perm&0o027 != 0 {
		return nil, fmt.Errorf("key file %s: mode %04o lets others read it or non-owners write it; want 0600, 0400 or 0440", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key file %s: no PKCS#8 \"PRIVATE KEY\" PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T is not an Ed25519 key", path, parsed)
	}
	created, ok := kidTime(kid)
	if !ok {
		created = info.ModTime() // a kid an operator chose by hand
	}
	return newKey(kid, priv, created)
}

// kidTime parses the creation time out of a kid made by newKID.
func kidTime(kid string) (time.Time, bool) {
	stamp, _, ok := strings.Cut(kid, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(kidTimeLayout, stamp)
	return t, err == nil
}

// newKID returns a time-sortable kid that sorts after every kid in existing,
// so the new key becomes the signer even if the clock is behind the newest
// key's stamp (skew between replicas, two rotations within one second).
func newKID(now time.Time, existing []*key) (string, error) {
	stamp := now.UTC().Truncate(time.Second)
	var suffix [4]byte
	for {
		if _, err := rand.Read(suffix[:]); err != nil {
			return "", fmt.Errorf("kid: %w", err)
		}
		kid := stamp.Format(kidTimeLayout) + "-" + hex.EncodeToString(suffix[:])
		if len(existing) == 0 || kid > existing[len(existing)-1].kid {
			return kid, nil
		}
		if t, ok := kidTime(existing[len(existing)-1].kid); ok && !t.Before(stamp) {
			stamp = t.Add(time.Second)
		} else {
			// The newest kid was named by hand and sorts after any stamp;
			// retrying cannot help.
			return "", fmt.Errorf("kid: cannot name a key that sorts after %q", existing[len(existing)-1].kid)
		}
	}
}

// writeKey generates a key and stores it atomically as dir/<kid>.pem: it is
// written to a hidden temp file first, so a replica reloading the directory
// never reads half a key.
func writeKey(dir, kid string, created time.Time) (*key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*.tmp") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	path := filepath.Join(dir, kid+keyFileExt)
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("write key: %s already exists", path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	syncDir(dir)
	return newKey(kid, priv, created)
}

// syncDir makes a rename durable; failure only weakens crash safety.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// ensureKeysDir creates dir with mode 0700 when missing.
func ensureKeysDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keys dir: %w", err)
	}
	return nil
}
