// Package capture records every request through the proxy, and every state change of the
// gateway, into the audit spool.
//
// A request's record reaches the spool before its response is complete for the client: it is
// appended when the last byte of a response of known length is about to be written, when the
// header of an empty response is about to go out, or when the handler returns (before a chunked
// response's final chunk). Long-running requests (watch, exec, attach, port-forward) get a
// started record before their response starts and an ended record when they end. If a record
// cannot be appended, the response is cut off instead of completed, so a client never sees a
// response the audit trail lacks. When the spool is nearly full, new requests are refused with
// 503 up front (OnFullDeny, the default) or let through unrecorded and counted (OnFullDrop).
package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Log is the spool as capture sees it.
type Log interface {
	Append(payload []byte) (uint64, error)
	AppendSync(payload []byte) (uint64, error)
	Free() int64
}

// OnFull says what happens to requests when the spool cannot take their records.
type OnFull string

// The choices for OnFull.
const (
	// OnFullDeny refuses requests that cannot be recorded: 503 before they reach the API server.
	OnFullDeny OnFull = "deny"
	// OnFullDrop lets them through unrecorded, counting each one (an explicit opt-out).
	OnFullDrop OnFull = "drop"
)

// ErrNotRecorded is returned by Record when the event could not be appended and OnFull is deny.
var ErrNotRecorded = errors.New("the audit spool cannot take the record")

// Config configures a Capture.
type Config struct {
	Log Log
	// Policy decides how much of each request is kept (default event.DefaultPolicy()).
	Policy *event.Policy
	// Redactor cleans bodies (zero value: default limits).
	Redactor *event.Redactor
	// Strict holds each response until the fsync covering its record (AppendSync), so even a
	// machine crash loses nothing; otherwise group commit fsyncs within the spool's interval.
	Strict bool
	// OnFull is OnFullDeny (default) or OnFullDrop.
	OnFull OnFull
	// Reserve is the free spool space below which new requests are refused (deny) or not
	// recorded (drop). Default 1 MiB, room for the records of requests already in flight.
	Reserve int64
	// TrustedProxies are load balancers whose X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Stats counts what capture did since it started.
type Stats struct {
	Recorded uint64 // records appended
	Refused  uint64 // requests refused with 503 because the spool was full (deny)
	Dropped  uint64 // records not appended under OnFullDrop
	Failed   uint64 // records that could not be appended under OnFullDeny (response cut off)
}

// Capture records requests and state changes. Safe for concurrent use.
type Capture struct {
	cfg                                Config
	recorded, refused, dropped, failed atomic.Uint64
	lastWarn                           atomic.Int64 // unix nanos of the last "spool full" warning
	bufs                               sync.Pool

	// The requests the spool could not take since the last spool_full record; gapPending
	// keeps the check on the request path to one atomic load.
	gapPending atomic.Bool
	gapMu      sync.Mutex
	gap        unrecorded
}

// unrecorded tallies the requests of a time the spool was full.
type unrecorded struct {
	refused, dropped uint64
	from, to         time.Time
}

// New checks cfg and returns a Capture.
func New(cfg Config) (*Capture, error) {
	if cfg.Log == nil {
		return nil, errors.New("capture: Log is required")
	}
	switch cfg.OnFull {
	case "":
		cfg.OnFull = OnFullDeny
	case OnFullDeny, OnFullDrop:
	default:
		return nil, fmt.Errorf("capture: onFull %q: want %q or %q", cfg.OnFull, OnFullDeny, OnFullDrop)
	}
	if cfg.Policy == nil {
		cfg.Policy = event.DefaultPolicy()
	}
	if cfg.Redactor == nil {
		cfg.Redactor = &event.Redactor{}
	}
	if cfg.Reserve <= 0 {
		cfg.Reserve = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Capture{cfg: cfg}
	c.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	return c, nil
}

// Stats returns the counters.
func (c *Capture) Stats() Stats {
	return Stats{Recorded: c.recorded.Load(), Refused: c.refused.Load(), Dropped: c.dropped.Load(), Failed: c.failed.Load()}
}

// Record appends a state-change event (login, logout, token issued, grant, ...). Under
// OnFullDeny a record that cannot be appended is an error wrapping ErrNotRecorded: the caller
// must not carry out (or report) the change. Under OnFullDrop it is counted and nil is returned.
func (c *Capture) Record(e *event.Event) error {
	if e.Time.IsZero() {
		e.Time = c.cfg.Now().UTC()
	}
	if e.EventID == "" {
		e.EventID = event.NewID()
	}
	if e.Stage == "" {
		e.Stage = event.StageComplete
	}
	return c.append(e)
}

// RecordBatch appends events that come from outside the gateway (the API server's own audit
// webhook) and returns once every one is fsynced: the sender forgets a batch once it is
// answered. It never drops, whatever OnFull says: the sender keeps a batch it could not
// deliver and retries, so an error (spool full or failing) loses nothing. On error some of
// the events may be in the spool already; the sender's retry stores them again.
func (c *Capture) RecordBatch(events []*event.Event) error {
	if c.Full() {
		return ErrNotRecorded
	}
	for i, e := range events {
		if e.Time.IsZero() {
			e.Time = c.cfg.Now().UTC()
		}
		// The spool fsyncs in order: waiting for the last record covers the batch.
		if err := c.put(e, i == len(events)-1); err != nil {
			c.warnFull(err)
			return fmt.Errorf("%w: %w", ErrNotRecorded, err)
		}
	}
	return nil
}

// append encodes e and hands it to the spool, counting the outcome. The error is nil when the
// record went in, or when it did not and OnFull is drop.
func (c *Capture) append(e *event.Event) error {
	err := c.put(e, c.cfg.Strict)
	if err == nil {
		return nil
	}
	c.warnFull(err)
	c.noteUnrecorded(c.cfg.OnFull == OnFullDeny)
	if c.cfg.OnFull == OnFullDrop {
		c.dropped.Add(1)
		return nil
	}
	c.failed.Add(1)
	return fmt.Errorf("%w: %w", ErrNotRecorded, err)
}

// put encodes e and hands it to the spool, waiting for its fsync when sync is set; it counts
// what went in.
func (c *Capture) put(e *event.Event, sync bool) error {
	bp := c.bufs.Get().(*[]byte)
	buf := event.Marshal((*bp)[:0], e)
	var err error
	if sync {
		_, err = c.cfg.Log.AppendSync(buf)
	} else {
		_, err = c.cfg.Log.Append(buf)
	}
	if cap(buf) <= 64<<10 {
		*bp = buf[:0]
		c.bufs.Put(bp)
	}
	if err == nil {
		c.recorded.Add(1)
	}
	return err
}

// spoolFullReason is the refusal_reason of a spool_full record.
const spoolFullReason = "audit_spool_full"

// noteUnrecorded counts a request the spool could not take: refused (503, or its response
// withheld) or let through unrecorded (onFull: drop).
func (c *Capture) noteUnrecorded(refused bool) {
	now := c.cfg.Now().UTC()
	c.gapMu.Lock()
	if c.gap.from.IsZero() {
		c.gap.from = now
	}
	c.gap.to = now
	if refused {
		c.gap.refused++
	} else {
		c.gap.dropped++
	}
	c.gapMu.Unlock()
	c.gapPending.Store(true)
}

// recordGap appends, once the spool takes records again, one spool_full record of the
// requests it could not: they cannot be on the record one by one, but a security team must
// see that there was a gap, how long it was and how many requests fell into it.
func (c *Capture) recordGap() {
	if !c.gapPending.Load() || c.Full() {
		return
	}
	c.gapMu.Lock()
	g := c.gap
	c.gap = unrecorded{}
	c.gapPending.Store(false)
	c.gapMu.Unlock()
	if g.refused+g.dropped == 0 {
		return
	}
	e := event.New(event.KindSpoolFull, g.from)
	e.ResponseCode, e.Decision, e.RefusalReason = http.StatusServiceUnavailable, event.DecisionRefused, spoolFullReason
	if g.refused == 0 {
		e.ResponseCode, e.Decision = 0, event.DecisionError
	}
	e.Extra = map[string]string{
		"refused": strconv.FormatUint(g.refused, 10), "dropped": strconv.FormatUint(g.dropped, 10),
		"until": g.to.Format(time.RFC3339Nano),
	}
	if err := c.put(e, c.cfg.Strict); err == nil {
		return
	}
	// Not in the spool after all: keep the tally for the next try.
	c.gapMu.Lock()
	c.gap.refused += g.refused
	c.gap.dropped += g.dropped
	if c.gap.from.IsZero() || g.from.Before(c.gap.from) {
		c.gap.from = g.from
	}
	if g.to.After(c.gap.to) {
		c.gap.to = g.to
	}
	c.gapMu.Unlock()
	c.gapPending.Store(true)
}

// Full reports whether new requests are held back: the spool has less than Reserve free. Under
// OnFullDeny they get 503 (and /readyz says so); under OnFullDrop they go unrecorded.
func (c *Capture) Full() bool { return c.cfg.Log.Free() < c.cfg.Reserve }

// warnFull logs problems with the spool at most once a second: under load every request would
// otherwise log the same line.
func (c *Capture) warnFull(err error) {
	now := c.cfg.Now().UnixNano()
	last := c.lastWarn.Load()
	if now-last < int64(time.Second) || !c.lastWarn.CompareAndSwap(last, now) {
		return
	}
	msg := "audit record not appended; requests are refused until the spool has room (audit.onFull: deny)"
	if c.cfg.OnFull == OnFullDrop {
		msg = "audit record not appended and DROPPED (audit.onFull: drop)"
	}
	c.cfg.Logger.Error(msg, "error", errString(err), "free_bytes", c.cfg.Log.Free())
}

func errString(err error) string {
	if err == nil {
		return "spool below its reserve"
	}
	return err.Error()
}
