package session

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
	"unsafe"
)

// cacheKey is the SHA-256 of a token: the cache never holds tokens, and a
// dump of it cannot be replayed.
type cacheKey [sha256.Size]byte

func hashToken(token string) cacheKey {
	// Hash the string's bytes in place: converting to []byte would copy the
	// whole token on every request. sha256 only reads the slice.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// cacheEntry is a verified token's result. claims is shared and never mutated.
type cacheEntry struct {
	claims    *Claims
	key       *key // the entry is void once this key is no longer loaded
	notBefore time.Time
	seq       uint64 // insertion order, to evict the oldest
}

// verifyCache maps token hashes to verified claims. It is split into shards,
// each with its own RWMutex on its own cache line, so concurrent requests for
// different tokens do not contend on one lock.
type verifyCache struct {
	shards   []cacheShard
	mask     uint64
	perShard int
}

type cacheShard struct {
	mu      sync.RWMutex
	entries map[cacheKey]*cacheEntry
	seq     uint64
	_       [64]byte // keep neighbouring shards' locks off this cache line
}

const maxCacheShards = 64

// newVerifyCache returns nil (no caching) for size <= 0. Shards hold at least
// 64 entries each, so small caches do not degenerate into tiny shards.
func newVerifyCache(size int) *verifyCache {
	if size <= 0 {
		return nil
	}
	n := 1
	for n < maxCacheShards && size/(n*2) >= 64 {
		n *= 2
	}
	c := &verifyCache{shards: make([]cacheShard, n), mask: uint64(n - 1), perShard: size / n}
	for i := range c.shards {
		c.shards[i].entries = make(map[cacheKey]*cacheEntry)
	}
	return c
}

func (c *verifyCache) shard(k cacheKey) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint64(k[:8])&c.mask]
}

func (c *verifyCache) get(k cacheKey) *cacheEntry {
	s := c.shard(k)
	s.mu.RLock()
	e := s.entries[k]
	s.mu.RUnlock()
	return e
}

// put stores e. A full shard first drops entries expired before cutoff, then,
// if none were, the oldest entry.
func (c *verifyCache) put(k cacheKey, e *cacheEntry, cutoff time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[k]; !ok && len(s.entries) >= c.perShard {
		s.evict(cutoff)
	}
	s.seq++
	e.seq = s.seq
	s.entries[k] = e
}

// evict runs only on the slow path (after a signature check) and scans at most
// one shard, a few hundred entries with the default size.
func (s *cacheShard) evict(cutoff time.Time) {
	var oldestKey cacheKey
	var oldest *cacheEntry
	removed := false
	for k, e := range s.entries {
		if e.claims.ExpiresAt.Before(cutoff) {
			delete(s.entries, k)
			removed = true
			continue
		}
		if oldest == nil || e.seq < oldest.seq {
			oldestKey, oldest = k, e
		}
	}
	if !removed && oldest != nil {
		delete(s.entries, oldestKey)
	}
}

func (c *verifyCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.entries)
		s.mu.RUnlock()
	}
	return n
}
