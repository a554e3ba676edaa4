package session

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/utils/clock"
)

// maintainEvery is how often Run reloads the keys directory, so a replica
// signs with a key another replica rotated in within a minute.
const maintainEvery = time.Minute

// Rotate writes a new key that becomes the signer at once. Older keys keep
// verifying until PruneKeys removes them.
func (m *Manager) Rotate() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Reload first so the new kid sorts after keys other replicas added.
	if err := m.reloadLocked(); err != nil {
		return "", fmt.Errorf("session: rotate: %w", err)
	}
	cur := m.keys.Load()
	kid, err := newKID(m.cfg.Clock.Now(), cur.ordered)
	if err != nil {
		return "", fmt.Errorf("session: rotate: %w", err)
	}
	created, _ := kidTime(kid)
	k, err := writeKey(m.cfg.KeysDir, kid, created)
	if err != nil {
		return "", fmt.Errorf("session: rotate: %w", err)
	}
	m.keys.Store(newKeySet(append(slices.Clone(cur.ordered), k)))
	return kid, nil
}

// PruneKeys deletes keys retired more than RotateEvery+TTL+Leeway ago, where
// a key retires when the next key is created. Measuring from retirement, not
// creation, keeps a key that signed until a late or manual rotation; the
// RotateEvery slack covers replicas still signing with it until they notice.
// The signer is never removed. It returns the kids it removed.
func (m *Manager) PruneKeys() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.keys.Load()
	now := m.cfg.Clock.Now()
	grace := m.cfg.RotateEvery + m.cfg.TTL + m.cfg.Leeway
	var kept []*key
	var removed []string
	var errs []error
	last := len(cur.ordered) - 1
	for i, k := range cur.ordered {
		if i == last {
			kept = append(kept, k)
			continue
		}
		retired := cur.ordered[i+1].created
		if retired.Before(k.created) { // hand-named kids need not sort by time
			retired = k.created
		}
		if now.Before(retired.Add(grace)) {
			kept = append(kept, k)
			continue
		}
		err := os.Remove(filepath.Join(m.cfg.KeysDir, k.kid+keyFileExt))
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // another replica may have pruned it
			errs = append(errs, err)
			kept = append(kept, k)
			continue
		}
		removed = append(removed, k.kid)
	}
	if len(removed) > 0 {
		m.keys.Store(newKeySet(kept))
		syncDir(m.cfg.KeysDir)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("session: prune keys: %w", err)
	}
	return removed, nil
}

// Run reloads the keys directory every minute and, when RotateEvery > 0,
// rotates and prunes on schedule, until ctx is done. Errors are logged and
// retried on the next round: a read-only or briefly failing volume must not
// stop verification.
func (m *Manager) Run(ctx context.Context) error {
	var tick <-chan time.Time
	if c, ok := m.cfg.Clock.(clock.WithTicker); ok {
		t := c.NewTicker(maintainEvery)
		defer t.Stop()
		tick = t.C()
	} else {
		t := time.NewTicker(maintainEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		if err := m.maintain(); err != nil {
			m.cfg.Logger.Warn("session key maintenance failed", "keys_dir", m.cfg.KeysDir, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// maintain is one round of Run.
func (m *Manager) maintain() error {
	m.mu.Lock()
	err := m.reloadLocked()
	signer := m.keys.Load().signing()
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("session: reload keys: %w", err)
	}
	if m.cfg.RotateEvery <= 0 {
		return nil
	}
	if m.cfg.Clock.Since(signer.created) >= m.cfg.RotateEvery {
		kid, err := m.Rotate()
		if err != nil {
			return err
		}
		m.cfg.Logger.Info("session signing key rotated", "kid", kid)
	}
	removed, err := m.PruneKeys()
	if len(removed) > 0 {
		m.cfg.Logger.Info("session signing keys pruned", "kids", removed)
	}
	return err
}
