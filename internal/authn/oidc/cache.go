package oidc

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/kaccess/kaccess/internal/authn"
)

// DefaultCacheSize bounds the verified-token cache.
const DefaultCacheSize = 10000

// tokenKey is the SHA-256 of a token: the cache never holds a token itself.
type tokenKey [sha256.Size]byte

type cacheEntry struct {
	id *authn.Identity
	// cfg is the issuer the token was verified for (its skew applies on a hit).
	cfg *Config
}

// cache keeps verified identities until their token expires. When full, expired entries go
// first, then arbitrary ones (Go's map order): a miss only costs one signature check.
type cache struct {
	mu      sync.RWMutex
	max     int
	entries map[tokenKey]cacheEntry
}

func newCache(max int) *cache {
	return &cache{max: max, entries: make(map[tokenKey]cacheEntry)}
}

func (c *cache) get(k tokenKey) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	return e, ok
}

func (c *cache) put(k tokenKey, e cacheEntry, now time.Time) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for key, old := range c.entries {
			if !now.Before(old.id.ExpiresAt.Add(time.Duration(old.cfg.ClockSkew))) {
				delete(c.entries, key)
			}
		}
		for key := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = e
}

func (c *cache) remove(k tokenKey) {
	c.mu.Lock()
	delete(c.entries, k)
	c.mu.Unlock()
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
