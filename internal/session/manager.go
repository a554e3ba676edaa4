package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// reloadInterval rate-limits the key reloads that an unknown kid triggers, so
// a flood of tokens with made-up kids cannot turn into a flood of disk reads.
const reloadInterval = 5 * time.Second

// Manager mints and verifies session tokens. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	keys  atomic.Pointer[keySet] // swapped whole; Verify never locks for keys
	cache *verifyCache           // nil when caching is disabled
	// loading is cfg.Revocations when it may not have loaded its list yet, else nil.
	loading LoadingRevocationStore

	mu             sync.Mutex // serializes key changes: reload, rotate, prune
	lastMissReload time.Time  // guarded by mu
}

// NewManager validates cfg, loads the keys in cfg.KeysDir and generates the
// first key when the directory has none.
func NewManager(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ensureKeysDir(cfg.KeysDir); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	keys, err := loadKeys(cfg.KeysDir)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	if len(keys) == 0 {
		kid, err := newKID(cfg.Clock.Now(), nil)
		if err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
		created, _ := kidTime(kid)
		k, err := writeKey(cfg.KeysDir, kid, created)
		if err != nil {
			return nil, fmt.Errorf("session: first key: %w", err)
		}
		keys = append(keys, k)
	}
	m := &Manager{cfg: cfg, cache: newVerifyCache(cfg.CacheSize)}
	m.loading, _ = cfg.Revocations.(LoadingRevocationStore)
	m.keys.Store(newKeySet(keys))
	return m, nil
}

// Verify checks a token and returns its claims. Results are cached by the
// token's SHA-256; a cached result is still checked against the clock and
// the revocation store on every call.
func (m *Manager) Verify(_ context.Context, token string) (*Claims, error) {
	switch {
	case token == "":
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	case len(token) > maxTokenSize:
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxTokenSize)
	}
	var h cacheKey
	if m.cache != nil {
		h = hashToken(token)
		// The key check drops results whose key was removed or replaced.
		if e := m.cache.get(h); e != nil && m.keys.Load().byKID[e.key.kid] == e.key {
			if err := m.checkLive(e.claims, e.notBefore); err != nil {
				return nil, err
			}
			return e.claims.clone(), nil
		}
	}
	v, err := m.verifyToken(token)
	if err != nil {
		return nil, err
	}
	if err := m.checkLive(v.claims, v.notBefore); err != nil {
		return nil, err
	}
	if m.cache != nil {
		m.cache.put(h, &cacheEntry{claims: v.claims, key: v.key, notBefore: v.notBefore},
			m.cfg.Clock.Now().Add(-m.cfg.Leeway))
	}
	return v.claims.clone(), nil
}

func (m *Manager) checkLive(c *Claims, notBefore time.Time) error {
	if err := m.checkWindow(m.cfg.Clock.Now(), notBefore, c.ExpiresAt); err != nil {
		return err
	}
	if m.loading != nil && !m.loading.Loaded() {
		return ErrRevocationsUnknown
	}
	if m.cfg.Revocations.IsRevoked(c.SessionID) {
		return ErrRevoked
	}
	return nil
}

// Revoke ends a session at once, cached tokens included. until is when its
// tokens expire; zero means "unknown" and covers the longest possible TTL.
func (m *Manager) Revoke(ctx context.Context, sessionID string, until time.Time) error {
	if sessionID == "" {
		return errors.New("session: revoke: empty session id")
	}
	if until.IsZero() {
		until = m.cfg.Clock.Now().Add(MaxTTL)
	}
	// Tokens are accepted up to Leeway past exp; the revocation must outlive that.
	if err := m.cfg.Revocations.Revoke(ctx, sessionID, until.Add(m.cfg.Leeway)); err != nil {
		return fmt.Errorf("session: revoke: %w", err)
	}
	return nil
}

// lookupKey finds the key for kid, reloading KeysDir (at most once per
// reloadInterval) when it is unknown: another replica may have rotated.
func (m *Manager) lookupKey(kid string) (*key, error) {
	if k := m.keys.Load().byKID[kid]; k != nil {
		return k, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := m.keys.Load().byKID[kid]; k != nil { // reloaded while we waited
		return k, nil
	}
	now := m.cfg.Clock.Now()
	if d := now.Sub(m.lastMissReload); !m.lastMissReload.IsZero() && d >= 0 && d < reloadInterval {
		return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	m.lastMissReload = now
	if err := m.reloadLocked(); err != nil {
		m.cfg.Logger.Warn("session keys reload failed", "keys_dir", m.cfg.KeysDir, "error", err)
		return nil, fmt.Errorf("%w: kid %q (reload failed: %w)", ErrUnknownKey, kid, err)
	}
	if k := m.keys.Load().byKID[kid]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
}

// reloadLocked replaces the key set with the directory's contents. A failed
// or empty load keeps the current set: better to keep verifying than to lock
// everyone out because of one bad file.
func (m *Manager) reloadLocked() error {
	keys, err := loadKeys(m.cfg.KeysDir)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("keys dir %s has no keys", m.cfg.KeysDir)
	}
	old := m.keys.Load()
	for i, k := range keys {
		// Reuse unchanged keys: cache entries point at them and stay valid.
		if prev := old.byKID[k.kid]; prev != nil && prev.public.Equal(k.public) {
			keys[i] = prev
		}
	}
	m.keys.Store(newKeySet(keys))
	return nil
}

// Keys lists the loaded keys in kid order, for operators.
func (m *Manager) Keys() []KeyInfo {
	set := m.keys.Load()
	signer := set.signing()
	out := make([]KeyInfo, 0, len(set.ordered))
	for _, k := range set.ordered {
		out = append(out, KeyInfo{KID: k.kid, Created: k.created, Signing: k == signer})
	}
	return out
}
