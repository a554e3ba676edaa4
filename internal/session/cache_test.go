package session

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestNewVerifyCacheSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, wantShards int
	}{
		{-1, 0}, {1, 1}, {127, 1}, {128, 2}, {DefaultCacheSize, 64}, {1 << 20, 64},
	}
	for _, tt := range tests {
		c := newVerifyCache(tt.size)
		if tt.wantShards == 0 {
			if c != nil {
				t.Errorf("size %d: want no cache", tt.size)
			}
			continue
		}
		if len(c.shards) != tt.wantShards || len(c.shards)*c.perShard > tt.size {
			t.Errorf("size %d: %d shards of %d, want %d shards within the size", tt.size, len(c.shards), c.perShard, tt.wantShards)
		}
	}
}

func TestCacheEviction(t *testing.T) {
	t.Parallel()
	entry := func(exp time.Time) *cacheEntry {
		return &cacheEntry{claims: &Claims{ExpiresAt: exp}}
	}
	keyOf := func(i int) cacheKey { return hashToken(fmt.Sprint(i)) }
	live := testStart.Add(time.Hour)

	t.Run("oldest goes when nothing expired", func(t *testing.T) {
		t.Parallel()
		c := newVerifyCache(3)
		for i := range 4 {
			c.put(keyOf(i), entry(live), testStart)
		}
		if c.len() != 3 || c.get(keyOf(0)) != nil || c.get(keyOf(3)) == nil {
			t.Fatalf("len %d, oldest present %v", c.len(), c.get(keyOf(0)) != nil)
		}
	})
	t.Run("expired go first", func(t *testing.T) {
		t.Parallel()
		c := newVerifyCache(3)
		c.put(keyOf(0), entry(live), testStart)
		c.put(keyOf(1), entry(testStart.Add(-time.Minute)), testStart)
		c.put(keyOf(2), entry(testStart.Add(-time.Second)), testStart)
		c.put(keyOf(3), entry(live), testStart)
		if c.len() != 2 || c.get(keyOf(0)) == nil || c.get(keyOf(3)) == nil {
			t.Fatalf("len %d; want the two live entries", c.len())
		}
	})
	t.Run("replacing an entry evicts nothing", func(t *testing.T) {
		t.Parallel()
		c := newVerifyCache(2)
		c.put(keyOf(0), entry(live), testStart)
		c.put(keyOf(1), entry(live), testStart)
		c.put(keyOf(1), entry(live), testStart)
		if c.len() != 2 {
			t.Fatalf("len %d, want 2", c.len())
		}
	})
}

func TestVerifyCacheBounded(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = 10 })
	var toks []string
	for range 25 {
		tok := mint2(t, m)
		toks = append(toks, tok)
		if _, err := m.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.cache.len(); n > 10 {
		t.Fatalf("cache holds %d entries, limit 10", n)
	}
	// Evicted tokens still verify, the slow way.
	for _, tok := range toks {
		if _, err := m.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyWithoutCache(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = -1 })
	tok, c := mint(t, m, Claims{User: "alice"})
	for range 2 {
		if _, err := m.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Revoke(t.Context(), c.SessionID, c.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(t.Context(), tok); err == nil {
		t.Fatal("revoked token verified")
	}
}

// TestConcurrentVerify runs Verify from many goroutines while keys rotate and
// sessions are revoked; run with -race.
func TestConcurrentVerify(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, func(c *Config) { c.CacheSize = 16 }) // force evictions
	type minted struct {
		tok string
		c   Claims
	}
	var toks []minted
	for range 32 {
		tok, c := mint(t, m, Claims{User: "alice", Groups: []string{"dev"}})
		toks = append(toks, minted{tok, c})
	}
	revoked := toks[0].c.SessionID

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				mt := toks[(g+i)%len(toks)]
				c, err := m.Verify(t.Context(), mt.tok)
				switch {
				case mt.c.SessionID == revoked && err != nil:
					continue // revoked meanwhile
				case err != nil:
					errs <- err
					return
				case c.SessionID != mt.c.SessionID:
					errs <- fmt.Errorf("got session %s, want %s", c.SessionID, mt.c.SessionID)
					return
				}
				c.Groups[0] = "mutated" // must not leak into the cache
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if _, err := m.Rotate(); err != nil {
				errs <- err
			}
			if _, _, err := m.Mint(t.Context(), Claims{User: "bob"}); err != nil {
				errs <- err
			}
		}
		if err := m.Revoke(t.Context(), revoked, time.Time{}); err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, mt := range toks[1:] {
		c, err := m.Verify(t.Context(), mt.tok)
		if err != nil || c.Groups[0] != "dev" {
			t.Fatalf("after the storm: %+v, %v", c, err)
		}
	}
}
