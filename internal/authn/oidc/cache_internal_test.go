package oidc

import (
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn"
)

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cfg := &Config{ClockSkew: Duration(30 * time.Second)}
	c := newCache(3)
	put := func(b byte, exp time.Time) {
		c.put(tokenKey{b}, cacheEntry{id: &authn.Identity{ExpiresAt: exp}, cfg: cfg}, now)
	}
	put(1, now.Add(-time.Hour)) // expired: evicted first
	put(2, now.Add(time.Hour))
	put(3, now.Add(time.Hour))
	put(4, now.Add(time.Hour))
	if c.len() != 3 {
		t.Fatalf("len %d", c.len())
	}
	if _, ok := c.get(tokenKey{1}); ok {
		t.Error("the expired entry survived eviction")
	}
	for b := byte(5); b < 50; b++ {
		put(b, now.Add(time.Hour))
		if c.len() > 3 {
			t.Fatalf("len %d after %d", c.len(), b)
		}
	}
	if _, ok := c.get(tokenKey{49}); !ok {
		t.Error("the newest entry is missing")
	}
	off := newCache(0)
	off.put(tokenKey{1}, cacheEntry{id: &authn.Identity{}, cfg: cfg}, now)
	if off.len() != 0 {
		t.Error("a disabled cache stored an entry")
	}
}
