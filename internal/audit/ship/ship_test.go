package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/spool"
	"github.com/kaccess/kaccess/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestMain starts Debian's ClickHouse server for the pipeline benchmark.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithClickHouse())) }

// memStore is an in-memory store for the shipper's logic; the real stores run the conformance
// suite (internal/audit/storetest) and the gateway's end-to-end tests.
type memStore struct {
	mu       sync.Mutex
	rows     map[uint64]int // seq -> times stored
	tokens   []string
	failNext int               // fail this many writes without storing
	partial  bool              // next write stores its first half, then fails
	afterPut func()            // called after a successful write
	lister   bool              // implements StoredSeqs
	ids      map[uint64]string // seq -> event id
}

func newMem() *memStore {
	return &memStore{rows: map[uint64]int{}, ids: map[uint64]string{}, lister: true}
}

func (m *memStore) Write(ctx context.Context, token string, events []*event.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens = append(m.tokens, token)
	if m.failNext > 0 {
		m.failNext--
		return errors.New("server down")
	}
	put := events
	if m.partial {
		m.partial = false
		put = events[:len(events)/2]
	}
	for _, e := range put {
		if e.GatewayInstance != "inst" {
			return fmt.Errorf("instance %q", e.GatewayInstance)
		}
		m.rows[e.Seq]++
		m.ids[e.Seq] = e.EventID
	}
	if len(put) < len(events) {
		return errors.New("connection reset")
	}
	if m.afterPut != nil {
		m.afterPut()
	}
	return nil
}

type listingStore struct{ *memStore }

func (l listingStore) StoredSeqs(_ context.Context, instance string, first, last uint64) ([]uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for seq := range l.rows {
		if seq >= first && seq <= last {
			out = append(out, seq)
		}
	}
	return out, nil
}

func (m *memStore) sink() Sink {
	if m.lister {
		return listingStore{m}
	}
	return m
}

func openSpool(t *testing.T, dir string) *spool.Spool {
	t.Helper()
	s, err := spool.Open(spool.Config{Dir: dir, SyncInterval: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fill(t *testing.T, s *spool.Spool, n int) {
	t.Helper()
	for i := range n {
		e := event.New(event.KindRequest, time.Now())
		e.User = fmt.Sprintf("user-%d", i)
		if _, err := s.Append(event.Marshal(nil, e)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

// runUntil ships until cond holds (or fails the test after 10 s).
func runUntil(t *testing.T, s *spool.Spool, m *memStore, cond func() bool) *Shipper {
	t.Helper()
	sh, err := New(Config{Source: s.Reader(), Open: func(context.Context) (Sink, error) { return m.sink(), nil },
		Instance: "inst", MaxBatch: 100, FlushInterval: time.Millisecond, MinBackoff: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("condition not reached; stats %+v", sh.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	return sh
}

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rows)
}

func (m *memStore) assertOnce(t *testing.T, n int) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for seq := uint64(1); seq <= uint64(n); seq++ {
		if m.rows[seq] != 1 {
			t.Fatalf("seq %d stored %d times", seq, m.rows[seq])
		}
	}
	if len(m.rows) != n {
		t.Fatalf("%d rows, want %d", len(m.rows), n)
	}
}

func TestShipsEverythingOnceAndAcks(t *testing.T) {
	s := openSpool(t, t.TempDir())
	defer s.Close()
	fill(t, s, 450)
	m := newMem()
	sh := runUntil(t, s, m, func() bool { return s.Stats().RecordsPending == 0 })
	m.assertOnce(t, 450)
	if st := sh.Stats(); st.Shipped != 450 || st.Batches != 5 || st.LastSeq != 450 || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
}

func TestRetriesTheSameBatchWithTheSameToken(t *testing.T) {
	for _, lister := range []bool{false, true} {
		t.Run(fmt.Sprintf("lister=%v", lister), func(t *testing.T) {
			s := openSpool(t, t.TempDir())
			defer s.Close()
			fill(t, s, 50)
			m := newMem()
			m.lister, m.failNext = lister, 3
			sh := runUntil(t, s, m, func() bool { return s.Stats().RecordsPending == 0 })
			m.assertOnce(t, 50)
			if len(m.tokens) != 4 || slices.Compact(slices.Clone(m.tokens))[0] != m.tokens[3] || len(slices.Compact(slices.Clone(m.tokens))) != 1 {
				t.Fatalf("tokens %v: want the same token on every attempt", m.tokens)
			}
			if sh.Stats().Retries != 3 {
				t.Fatalf("stats %+v", sh.Stats())
			}
		})
	}
}

func TestPartlyStoredBatchIsCompletedNotDuplicated(t *testing.T) {
	s := openSpool(t, t.TempDir())
	defer s.Close()
	fill(t, s, 80)
	m := newMem()
	m.partial = true
	runUntil(t, s, m, func() bool { return s.Stats().RecordsPending == 0 })
	m.assertOnce(t, 80)
	if len(m.tokens) != 2 || m.tokens[0] == m.tokens[1] {
		t.Fatalf("tokens %v: the rest of a batch needs a token of its own", m.tokens)
	}
}

// A crash after the store took a batch and before the spool recorded the ack: after the
// restart the batch comes again and must not be stored twice.
func TestRedeliveryAfterCrashIsNotDuplicated(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	fill(t, s, 60)
	m := newMem()
	// "Crash" as soon as the store has the first batch: the spool closes before the ack.
	m.afterPut = func() { s.Close() }
	sh, _ := New(Config{Source: s.Reader(), Open: func(context.Context) (Sink, error) { return m.sink(), nil },
		Instance: "inst", MaxBatch: 100, Logger: quiet})
	if err := sh.Run(context.Background()); !errors.Is(err, spool.ErrClosed) {
		t.Fatalf("Run: %v", err)
	}
	if m.count() != 60 {
		t.Fatalf("the store has %d rows before the restart", m.count())
	}
	m.afterPut = nil
	s = openSpool(t, dir)
	defer s.Close()
	if st := s.Stats(); st.RecordsPending != 60 {
		t.Fatalf("%d records pending after the restart, want the unacknowledged 60", st.RecordsPending)
	}
	runUntil(t, s, m, func() bool { return s.Stats().RecordsPending == 0 })
	m.assertOnce(t, 60)
}

func TestWaitsForTheStoreToOpen(t *testing.T) {
	s := openSpool(t, t.TempDir())
	defer s.Close()
	fill(t, s, 5)
	m := newMem()
	attempts := 0
	sh, _ := New(Config{Source: s.Reader(), Instance: "inst", MinBackoff: time.Millisecond, Logger: quiet,
		Open: func(context.Context) (Sink, error) {
			if attempts++; attempts < 3 {
				return nil, errors.New("connection refused")
			}
			return m.sink(), nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	for m.count() < 5 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if attempts != 3 {
		t.Fatalf("%d open attempts", attempts)
	}
}

// StoreUp follows the inserts (false while they fail, true once one succeeds) and LastSuccess
// stays at the start until a batch is confirmed: the signals of the store-down and
// shipper-lag alerts.
func TestStoreUpAndLastSuccessFollowTheStore(t *testing.T) {
	s := openSpool(t, t.TempDir())
	defer s.Close()
	fill(t, s, 20)
	m := newMem()
	m.failNext = 1 << 30
	start := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(start.UnixNano())
	sh, err := New(Config{Source: s.Reader(), Open: func(context.Context) (Sink, error) { return m.sink(), nil },
		Instance: "inst", FlushInterval: time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Logger: quiet, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitStats := func(what string, cond func(Stats) bool) Stats {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st := sh.Stats()
			if cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v", what, st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	st := waitStats("failing inserts", func(st Stats) bool { return st.Retries >= 3 })
	if st.StoreUp || !st.Connected || !st.LastSuccess.Equal(start) {
		t.Fatalf("while every insert fails: %+v", st)
	}
	later := start.Add(time.Hour)
	now.Store(later.UnixNano())
	m.mu.Lock()
	m.failNext = 0
	m.mu.Unlock()
	st = waitStats("store back", func(st Stats) bool { return st.Shipped == 20 && st.LastSuccess.Equal(later) })
	if !st.StoreUp {
		t.Fatalf("after a confirmed insert: %+v", st)
	}
}

// The spool's disk fills (the checkpoint cannot be written, so neither a read nor an ack can
// be recorded) and is freed again: the shipper waits it out and ships every record, the ones
// appended after the disk was freed too. It used to stop for good at the first such error,
// and every later record of that gateway stayed in the spool (found by make soak).
func TestDiskFullSpoolIsRetriedUntilItRecovers(t *testing.T) {
	dir := testenv.MountTmpfs(t, 1<<20)
	s := openSpool(t, dir)
	defer s.Close()
	fill(t, s, 50)
	freeDisk := testenv.FillDisk(t, dir)

	m := newMem()
	sh, err := New(Config{Source: s.Reader(), Open: func(context.Context) (Sink, error) { return m.sink(), nil },
		Instance: "inst", MaxBatch: 100, FlushInterval: time.Millisecond, MinBackoff: time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }() // a closed done (Run returned) does not block
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			select {
			case err, ok := <-done:
				if ok {
					t.Fatalf("%s: the shipper stopped: %v", what, err)
				}
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v, %d rows stored", what, sh.Stats(), m.count())
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait("full disk", func() bool { return sh.Stats().SpoolErrors >= 3 })
	if m.count() != 0 {
		t.Fatalf("%d rows stored although no batch could be taken from the spool", m.count())
	}

	freeDisk()
	fill(t, s, 30)
	wait("disk freed", func() bool { return s.Stats().RecordsPending == 0 })
	m.assertOnce(t, 80)
}
