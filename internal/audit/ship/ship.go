package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/spool"
)

// Source is the spool's reader as the shipper sees it.
type Source interface {
	Next(ctx context.Context, max int) (spool.Batch, error)
	Ack(seq uint64) error
}

// DefaultMaxBatch is the default of Config.MaxBatch: ClickHouse takes 10,000-100,000 rows an
// insert best, and per-insert costs (a part, the checkpoint) dominate below that.
const DefaultMaxBatch = 50_000

// Config configures a Shipper.
type Config struct {
	Source Source
	// Open connects to the store. It is called (again) until it succeeds, so the gateway
	// serves, spooling, while the store is down at start.
	Open func(ctx context.Context) (Sink, error)
	// Instance is the spool's instance id, stamped on every event with its sequence number.
	Instance string
	// MaxBatch caps the events per insert (default 50,000).
	MaxBatch int
	// FlushInterval is the longest a record waits for a fuller batch (default 1 s): the
	// store gets about one insert per interval per gateway, not one per request.
	FlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a failed insert
	// (defaults 200 ms and 10 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Now is the clock of Stats.LastSuccess; default time.Now.
	Now func() time.Time
}

// Stats counts what the shipper did.
type Stats struct {
	Shipped     uint64 // events the store confirmed
	Batches     uint64 // inserts the store confirmed
	Retries     uint64 // failed inserts (each retried with the same token)
	Undecodable uint64 // spool records that did not decode (logged, acknowledged)
	SpoolErrors uint64 // failed reads or acknowledgements of the spool (each retried)
	LastSeq     uint64 // last sequence number confirmed by the store
	Connected   bool   // the store was opened
	// StoreUp says the store takes inserts: it was opened and the last insert (or check of a
	// batch's rows) succeeded. False while it cannot be opened or fails; the spool fills.
	StoreUp bool
	// LastSuccess is when the shipper last moved the spool on (a batch confirmed and
	// acknowledged), or when it was created. With records pending, now minus this is how long
	// nothing has reached the store.
	LastSuccess time.Time
}

// Shipper moves records from the spool to the store.
type Shipper struct {
	cfg                                                  Config
	shipped, batches, retries, bad, lastSeq, spoolErrors atomic.Uint64
	connected, up                                        atomic.Bool
	lastSuccess                                          atomic.Int64 // unix nanoseconds
}

// New checks cfg and returns a Shipper; Run starts it.
func New(cfg Config) (*Shipper, error) {
	if cfg.Source == nil || cfg.Open == nil {
		return nil, errors.New("ship: Source and Open are required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Shipper{cfg: cfg}
	s.lastSuccess.Store(cfg.Now().UnixNano())
	return s, nil
}

// Stats returns the counters.
func (s *Shipper) Stats() Stats {
	return Stats{
		Shipped: s.shipped.Load(), Batches: s.batches.Load(), Retries: s.retries.Load(),
		Undecodable: s.bad.Load(), SpoolErrors: s.spoolErrors.Load(), LastSeq: s.lastSeq.Load(), Connected: s.connected.Load(),
		StoreUp: s.up.Load(), LastSuccess: time.Unix(0, s.lastSuccess.Load()),
	}
}

// Run ships until ctx ends. It returns ctx's error, or a spool error it cannot get past
// (closed, or corrupt data); any other spool error (a disk that is full or failing) is
// retried with backoff, since the gateway keeps appending records that must reach the
// store once the disk recovers. A sink that is an io.Closer is closed on return.
func (s *Shipper) Run(ctx context.Context) error {
	sink, err := s.open(ctx)
	if err != nil {
		return err
	}
	if c, ok := sink.(io.Closer); ok {
		defer c.Close()
	}
	var events []*event.Event
	var pool []event.Event
	// The first batch may have been stored before a crash kept it from being acknowledged.
	maybeStored := true
	for {
		began := time.Now()
		var b spool.Batch
		if err := s.retrySpool(ctx, "read", func() (err error) {
			b, err = s.cfg.Source.Next(ctx, s.cfg.MaxBatch)
			return err
		}); err != nil {
			return err
		}
		events, pool = s.decode(b, events[:0], pool)
		if len(events) > 0 {
			if err := s.write(ctx, sink, b.Token, events, maybeStored); err != nil {
				return err
			}
		}
		maybeStored = false
		if err := s.retrySpool(ctx, "acknowledge", func() error { return s.cfg.Source.Ack(b.LastSeq) }); err != nil {
			return err
		}
		s.lastSeq.Store(b.LastSeq)
		s.lastSuccess.Store(s.cfg.Now().UnixNano())
		// A full batch means a backlog: go on at once. Otherwise let records gather.
		if len(b.Records) < s.cfg.MaxBatch {
			if err := sleep(ctx, s.cfg.FlushInterval-time.Since(began)); err != nil {
				return err
			}
		}
	}
}

// retrySpool runs op until it succeeds, backing off between failures it can get past.
func (s *Shipper) retrySpool(ctx context.Context, what string, op func() error) error {
	return s.retry(ctx, op, func(err error, attempt int, backoff time.Duration) error {
		var corrupt *spool.CorruptError
		if errors.Is(err, spool.ErrClosed) || errors.As(err, &corrupt) {
			return fmt.Errorf("ship: %s spool: %w", what, err)
		}
		s.spoolErrors.Add(1)
		s.cfg.Logger.Error("audit spool could not be used; retrying (records wait in the spool)",
			"op", what, "error", err.Error(), "attempt", attempt, "retry_in", backoff.String())
		return nil
	}, func(attempts int) {
		s.cfg.Logger.Info("audit spool usable again; shipping resumes", "op", what, "attempts", attempts)
	})
}

// retry runs op until it succeeds or ctx ends, sleeping MinBackoff, doubling up to MaxBackoff,
// after each failure. failed sees every failure and may end the retries by returning an error;
// recovered, if set, is told when op succeeds after failing.
func (s *Shipper) retry(ctx context.Context, op func() error, failed func(err error, attempt int, backoff time.Duration) error, recovered func(attempts int)) error {
	backoff := s.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			if attempt > 1 && recovered != nil {
				recovered(attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if stop := failed(err, attempt, backoff); stop != nil {
			return stop
		}
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

func (s *Shipper) open(ctx context.Context) (Sink, error) {
	var sink Sink
	err := s.retry(ctx, func() (err error) {
		sink, err = s.cfg.Open(ctx)
		s.up.Store(err == nil)
		return err
	}, func(err error, _ int, backoff time.Duration) error {
		s.cfg.Logger.Warn("audit store not reachable; records stay in the spool until it is",
			"error", err.Error(), "retry_in", backoff.String())
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	s.connected.Store(true)
	return sink, nil
}

// decode turns the batch into events, reusing the event structs of earlier batches.
func (s *Shipper) decode(b spool.Batch, events []*event.Event, pool []event.Event) ([]*event.Event, []event.Event) {
	if cap(pool) < len(b.Records) {
		pool = make([]event.Event, len(b.Records))
	}
	pool = pool[:len(b.Records)]
	for i, rec := range b.Records {
		e := &pool[i]
		*e = event.Event{}
		if err := event.Unmarshal(rec.Payload, e); err != nil {
			// The spool's checksum matched, so this is a record an incompatible build wrote.
			// It cannot be stored; say so loudly rather than block every later record.
			s.bad.Add(1)
			s.cfg.Logger.Error("audit record in the spool does not decode; it is skipped",
				"seq", rec.Seq, "error", err.Error())
			continue
		}
		e.GatewayInstance, e.Seq = s.cfg.Instance, rec.Seq
		events = append(events, e)
	}
	return events, pool
}

// write inserts the batch until the store has it. Every retry sends the same events with the
// same token, so the store keeps the batch once however often it is retried.
func (s *Shipper) write(ctx context.Context, sink Sink, token string, events []*event.Event, maybeStored bool) error {
	backoff := s.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		var err error
		todo := events
		if maybeStored {
			todo, err = s.missing(ctx, sink, events)
		}
		if err == nil && len(todo) > 0 {
			tok := token
			if len(todo) < len(events) {
				// A different set of rows needs its own token, or a store deduplicating
				// by token could drop it as a repeat; the same subset gets the same one.
				tok = fmt.Sprintf("%s-rest-%d-%d", token, todo[0].Seq, len(todo))
			}
			err = sink.Write(ctx, tok, todo)
		}
		if err == nil {
			s.up.Store(true)
			s.shipped.Add(uint64(len(events)))
			s.batches.Add(1)
			if attempt > 1 {
				s.cfg.Logger.Info("audit store took the batch after retries", "attempts", attempt, "events", len(events))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		maybeStored = true // the failed insert may have gone in, wholly or partly
		s.up.Store(false)
		s.retries.Add(1)
		s.cfg.Logger.Warn("audit batch not stored; retrying the same batch", "error", err.Error(),
			"events", len(events), "attempt", attempt, "retry_in", backoff.String())
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// missing returns the events the store does not hold yet, when it can tell (SeqLister);
// otherwise all of them, relying on the batch's deduplication token.
func (s *Shipper) missing(ctx context.Context, sink Sink, events []*event.Event) ([]*event.Event, error) {
	lister, ok := sink.(SeqLister)
	if !ok {
		return events, nil
	}
	first, last := events[0].Seq, events[len(events)-1].Seq
	stored, err := lister.StoredSeqs(ctx, s.cfg.Instance, first, last)
	if err != nil {
		return nil, fmt.Errorf("checking which records the store has: %w", err)
	}
	if len(stored) == 0 {
		return events, nil
	}
	have := make(map[uint64]bool, len(stored))
	for _, seq := range stored {
		have[seq] = true
	}
	todo := make([]*event.Event, 0, len(events)-min(len(events), len(have)))
	for _, e := range events {
		if !have[e.Seq] {
			todo = append(todo, e)
		}
	}
	s.cfg.Logger.Info("audit store already had part of a batch; sending the rest",
		"stored", len(events)-len(todo), "missing", len(todo))
	return todo, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
