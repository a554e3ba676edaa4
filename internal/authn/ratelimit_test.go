package authn

import (
	"errors"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func limited(err error) bool             { return errors.Is(err, ErrTooManyAttempts) }

func TestFailureLimiterPerUser(t *testing.T) {
	clk := newFakeClock()
	l := NewFailureLimiter(FailureLimiterConfig{UserBurst: 3, UserEvery: time.Minute, AddrBurst: 100, Now: clk.now})
	for i := range 3 {
		if err := l.Allow("alice", "10.0.0.1"); err != nil {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		l.Failed("alice", "10.0.0.1")
	}
	if err := l.Allow("Alice", "10.0.0.2"); !limited(err) {
		t.Fatalf("4th attempt (other case, other address) = %v, want refusal", err)
	}
	if err := l.Allow("bob", "10.0.0.1"); err != nil {
		t.Fatalf("bob refused: %v", err)
	}
	clk.add(59 * time.Second)
	if err := l.Allow("alice", ""); !limited(err) {
		t.Fatal("a token came back early")
	}
	clk.add(time.Second)
	if err := l.Allow("alice", ""); err != nil {
		t.Fatalf("after a minute: %v", err)
	}
	l.Failed("alice", "")
	if err := l.Allow("alice", ""); !limited(err) {
		t.Fatal("one token only should have come back")
	}
	l.Succeeded("alice", "")
	if err := l.Allow("alice", ""); err != nil {
		t.Fatalf("after success: %v", err)
	}
}

func TestFailureLimiterPerAddress(t *testing.T) {
	clk := newFakeClock()
	l := NewFailureLimiter(FailureLimiterConfig{UserBurst: 100, AddrBurst: 5, AddrEvery: 10 * time.Second, Now: clk.now})
	for i := range 5 {
		user := string(rune('a' + i))
		if err := l.Allow(user, "192.0.2.7"); err != nil {
			t.Fatal(err)
		}
		l.Failed(user, "192.0.2.7")
	}
	if err := l.Allow("zed", "192.0.2.7"); !limited(err) {
		t.Fatalf("spraying from one address = %v, want refusal", err)
	}
	l.Succeeded("zed", "192.0.2.7") // a success does not clear the address
	if err := l.Allow("zed", "192.0.2.7"); !limited(err) {
		t.Fatal("address cleared by a success")
	}
	if err := l.Allow("zed", "192.0.2.8"); err != nil {
		t.Fatalf("other address: %v", err)
	}
	clk.add(10 * time.Second)
	if err := l.Allow("zed", "192.0.2.7"); err != nil {
		t.Fatalf("after 10s: %v", err)
	}
}

func TestFailureLimiterBoundsMemory(t *testing.T) {
	clk := newFakeClock()
	l := NewFailureLimiter(FailureLimiterConfig{UserBurst: 2, UserEvery: time.Second, MaxKeys: 10, Now: clk.now})
	for i := range 10 {
		l.Failed(string(rune('a'+i)), "")
	}
	clk.add(time.Hour) // all recovered
	l.Failed("new", "")
	if n := len(l.users); n != 1 {
		t.Errorf("%d keys tracked after the sweep, want 1", n)
	}
}
