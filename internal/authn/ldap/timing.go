package ldap

import (
	"sync"
	"time"
)

// durationAverage is an exponentially weighted moving average of durations, safe for
// concurrent use.
type durationAverage struct {
	mu  sync.Mutex
	avg time.Duration
	n   int
}

// observe adds one sample; each new sample weighs 1/8 once a few are in.
func (a *durationAverage) observe(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if a.n == 1 {
		a.avg = d
		return
	}
	a.avg += (d - a.avg) / time.Duration(min(a.n, 8))
}

// value returns the average, and false before any sample.
func (a *durationAverage) value() (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.avg, a.n > 0
}
