package authn

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// FailureLimiterConfig sets how many failures are tolerated before logins are slowed down.
// Each key (login name, client address) has a token bucket: a failure takes a token, tokens
// come back at the given rate, and a key without tokens is refused.
type FailureLimiterConfig struct {
	// UserBurst failures per login name in a row, then one per UserEvery; default 5 and 1m.
	UserBurst int
	UserEvery time.Duration
	// AddrBurst failures per client address in a row, then one per AddrEvery; default 20 and 10s.
	AddrBurst int
	AddrEvery time.Duration
	// MaxKeys bounds memory: when more keys are tracked, the recovered ones are dropped;
	// default 100,000.
	MaxKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// FailureLimiter slows down repeated failed logins per login name and per client address, so
// passwords cannot be guessed quickly, without locking anyone out for good. Safe for
// concurrent use.
type FailureLimiter struct {
	cfg   FailureLimiterConfig
	mu    sync.Mutex
	users map[string]*rate.Limiter
	addrs map[string]*rate.Limiter
}

// NewFailureLimiter returns a limiter with cfg's defaults filled in.
func NewFailureLimiter(cfg FailureLimiterConfig) *FailureLimiter {
	if cfg.UserBurst <= 0 {
		cfg.UserBurst = 5
	}
	if cfg.UserEvery <= 0 {
		cfg.UserEvery = time.Minute
	}
	if cfg.AddrBurst <= 0 {
		cfg.AddrBurst = 20
	}
	if cfg.AddrEvery <= 0 {
		cfg.AddrEvery = 10 * time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &FailureLimiter{cfg: cfg, users: map[string]*rate.Limiter{}, addrs: map[string]*rate.Limiter{}}
}

// userKey folds case: "Alice" and "alice" are one account in a directory.
func userKey(user string) string { return strings.ToLower(user) }

// Allow returns ErrTooManyAttempts (wrapped with the wait, for the log) when user or addr has no failures
// left; an empty addr is not limited by address.
func (l *FailureLimiter) Allow(user, addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	if lim := l.users[userKey(user)]; lim != nil && lim.TokensAt(now) < 1 {
		return fmt.Errorf("%w for this login name: retry in %s", ErrTooManyAttempts, l.wait(lim, now).Round(time.Second))
	}
	if lim := l.addrs[addr]; addr != "" && lim != nil && lim.TokensAt(now) < 1 {
		return fmt.Errorf("%w from this address: retry in %s", ErrTooManyAttempts, l.wait(lim, now).Round(time.Second))
	}
	return nil
}

// wait is how long until lim has a token again.
func (l *FailureLimiter) wait(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}

// Failed records a failed login of user from addr.
func (l *FailureLimiter) Failed(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.take(l.users, userKey(user), l.cfg.UserBurst, l.cfg.UserEvery, now)
	if addr != "" {
		l.take(l.addrs, addr, l.cfg.AddrBurst, l.cfg.AddrEvery, now)
	}
}

// Succeeded forgets user's failures (not the address's: one right password from an address
// does not excuse its guesses at other names).
func (l *FailureLimiter) Succeeded(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.users, userKey(user))
}

func (l *FailureLimiter) take(m map[string]*rate.Limiter, key string, burst int, every time.Duration, now time.Time) {
	lim := m[key]
	if lim == nil {
		if len(m) >= l.cfg.MaxKeys {
			l.sweep(m, now)
		}
		lim = rate.NewLimiter(rate.Every(every), burst)
		lim.SetBurstAt(now, burst) // full bucket as of now (not as of the zero time)
		m[key] = lim
	}
	lim.AllowN(now, 1)
}

// sweep drops keys whose buckets are full again: they carry no state.
func (l *FailureLimiter) sweep(m map[string]*rate.Limiter, now time.Time) {
	for k, lim := range m {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(m, k)
		}
	}
}
