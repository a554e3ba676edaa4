package webhook

import (
	"sync"
	"time"
)

// recent remembers the (auditID, stage) keys recorded lately, so a batch the API server sends
// again (it retries when an answer is lost) is not stored twice. Two generations, each at most
// max keys and rotated every period: a key is remembered for one to two periods, long enough
// for the API server's retries (minutes), with memory bounded whatever the rate.
type recent struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	rotated   time.Time
	period    time.Duration
	max       int
	now       func() time.Time
}

func newRecent(period time.Duration, max int, now func() time.Time) *recent {
	return &recent{cur: map[string]struct{}{}, prev: map[string]struct{}{}, rotated: now(), period: period, max: max, now: now}
}

// seen reports whether key was recorded lately.
func (r *recent) seen(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, a := r.cur[key]
	_, b := r.prev[key]
	return a || b
}

// add remembers keys once their records are durable (never before: a batch that failed must
// be taken again when the API server retries it).
func (r *recent) add(keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if now := r.now(); len(r.cur) >= r.max || now.Sub(r.rotated) >= r.period {
			r.prev, r.cur, r.rotated = r.cur, make(map[string]struct{}, len(r.cur)), now
		}
		r.cur[k] = struct{}{}
	}
}
