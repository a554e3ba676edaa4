package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// RevocationStore records revoked session ids. IsRevoked sits on the hot path
// of every request, so it takes no context and must be cheap; a shared store
// would keep a local mirror and answer from it.
type RevocationStore interface {
	// Revoke marks sessionID revoked until the given time, after which the
	// store may forget it (every token of the session has expired by then).
	Revoke(ctx context.Context, sessionID string, until time.Time) error
	IsRevoked(sessionID string) bool
}

// LoadingRevocationStore is a RevocationStore that mirrors a list it may not have loaded
// yet. Until Loaded, every session is refused with ErrRevocationsUnknown: a revoked token
// must not pass because a replica started while the list was out of reach.
type LoadingRevocationStore interface {
	RevocationStore
	Loaded() bool
}

// sweepEvery spaces out the scans that drop forgotten entries, so Revoke
// stays cheap when many sessions are revoked at once.
const sweepEvery = time.Minute

// MemoryRevocationStore is a RevocationStore for a single replica. Reads are
// lock-free (sync.Map), because every Verify consults it.
type MemoryRevocationStore struct {
	clock   clock.PassiveClock
	entries sync.Map // session id -> time.Time (until)

	mu        sync.Mutex
	lastSweep time.Time
}

// NewMemoryRevocationStore returns an empty store using clk for "now"
// (real time when nil).
func NewMemoryRevocationStore(clk clock.PassiveClock) *MemoryRevocationStore {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &MemoryRevocationStore{clock: clk}
}

// Revoke implements RevocationStore.
func (s *MemoryRevocationStore) Revoke(_ context.Context, sessionID string, until time.Time) error {
	if sessionID == "" {
		return errors.New("session: revoke: empty session id")
	}
	now := s.clock.Now()
	if until.After(now) {
		for {
			prev, loaded := s.entries.LoadOrStore(sessionID, until)
			// Keep the later deadline if the session is revoked twice.
			if !loaded || !until.After(prev.(time.Time)) ||
				s.entries.CompareAndSwap(sessionID, prev, until) {
				break
			}
		}
	}
	s.sweep(now)
	return nil
}

// IsRevoked implements RevocationStore.
func (s *MemoryRevocationStore) IsRevoked(sessionID string) bool {
	v, ok := s.entries.Load(sessionID)
	return ok && !s.clock.Now().After(v.(time.Time))
}

// sweep forgets entries whose deadline has passed, at most once per sweepEvery.
func (s *MemoryRevocationStore) sweep(now time.Time) {
	s.mu.Lock()
	if now.Sub(s.lastSweep) < sweepEvery {
		s.mu.Unlock()
		return
	}
	s.lastSweep = now
	s.mu.Unlock()
	s.entries.Range(func(k, v any) bool {
		if now.After(v.(time.Time)) {
			s.entries.CompareAndDelete(k, v)
		}
		return true
	})
}

// len counts live and not yet swept entries (for tests).
func (s *MemoryRevocationStore) len() int {
	n := 0
	s.entries.Range(func(_, _ any) bool { n++; return true })
	return n
}
