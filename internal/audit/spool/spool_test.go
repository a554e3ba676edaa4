package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		records int
		batch   int
	}{
		{"one record", 1, 10},
		{"one segment", 10, 3},
		{"many segments", 500, 64},
		{"batch of one", 50, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := mustOpen(t, testConfig(t.TempDir()))
			_, last := appendN(t, s, tt.records)
			got := readAll(t, s, tt.batch, last, true)
			if len(got) != tt.records {
				t.Fatalf("read %d records, want %d", len(got), tt.records)
			}
			st := s.Stats()
			if st.RecordsPending != 0 || st.AckedSeq != last || st.Segments != 1 {
				t.Fatalf("stats after acking all: %+v", st)
			}
		})
	}
}

func TestEmptyPayload(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testConfig(t.TempDir()))
	if _, err := s.Append(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Reader().Next(context.Background(), 10)
	if err != nil || len(b.Records) != 1 || len(b.Records[0].Payload) != 0 {
		t.Fatalf("Next = %+v, %v", b, err)
	}
}

func TestRestartContinuesSequenceAndReplaysUnacked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 100)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Reader().Next(context.Background(), 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reader().Ack(b.LastSeq); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, cfg)
	if s.ID() != id {
		t.Fatalf("instance id changed across restart: %s -> %s", id, s.ID())
	}
	if st := s.Stats(); st.LastSeq != 100 || st.AckedSeq != 40 || st.RecordsPending != 60 {
		t.Fatalf("stats after restart: %+v", st)
	}
	seq, err := s.Append(payloadFor(101))
	if err != nil || seq != 101 {
		t.Fatalf("Append after restart = %d, %v; want 101", seq, err)
	}
	got := readAll(t, s, 1000, 101, true)
	if got[0].Seq != 41 || len(got) != 61 {
		t.Fatalf("replayed %d records from %d, want 61 from 41", len(got), got[0].Seq)
	}

	// Everything acked, then restart: the sequence still continues.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if seq, err := s.Append(payloadFor(102)); err != nil || seq != 102 {
		t.Fatalf("Append after restart with all acked = %d, %v; want 102", seq, err)
	}
}

func TestAckDeletesOnlyFullyAckedSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	appendN(t, s, 200)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("want several segments, got %v", files)
	}
	checkDiskBytes(t, s, dir)
	defer checkDiskBytes(t, s, dir)
	second, _ := parseSegName(files[1])
	third, _ := parseSegName(files[2])

	tests := []struct {
		name      string
		ack       uint64
		wantFirst string // oldest segment left
	}{
		{"inside the first segment", second - 2, files[0]},
		{"last record of the first segment", second - 1, files[1]},
		{"first record of the third segment", third, files[2]},
	}
	for _, tt := range tests {
		b, err := s.Reader().Next(context.Background(), int(tt.ack-s.Stats().AckedSeq))
		if err != nil || b.LastSeq != tt.ack {
			t.Fatalf("%s: Next = %d..%d, %v", tt.name, b.FirstSeq, b.LastSeq, err)
		}
		if err := s.Reader().Ack(tt.ack); err != nil {
			t.Fatal(err)
		}
		if got := segFiles(t, dir); got[0] != tt.wantFirst {
			t.Errorf("%s: oldest segment %s, want %s", tt.name, got[0], tt.wantFirst)
		}
	}
	if err := s.Reader().Ack(s.Stats().LastSeq); err == nil {
		t.Error("Ack past the records handed out succeeded")
	}
}

func TestPartialAckKeepsRestInFlight(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testConfig(t.TempDir()))
	appendN(t, s, 30)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Reader().Next(context.Background(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reader().Ack(b.FirstSeq + 4); err != nil {
		t.Fatal(err)
	}
	b2, err := s.Reader().Next(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if b2.FirstSeq != b.FirstSeq+5 || b2.LastSeq != b.LastSeq {
		t.Fatalf("after partial ack got %d..%d, want %d..%d", b2.FirstSeq, b2.LastSeq, b.FirstSeq+5, b.LastSeq)
	}
	checkBatch(t, b2)
}

func TestNextBlocksUntilDataAndHonoursContext(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testConfig(t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Reader().Next(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty spool = %v, want deadline exceeded", err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		s.Append(payloadFor(1))
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	b, err := s.Reader().Next(ctx2, 10)
	if err != nil || b.FirstSeq != 1 {
		t.Fatalf("Next = %+v, %v", b, err)
	}
	checkBatch(t, b)
}

func TestCloseWakesReader(t *testing.T) {
	t.Parallel()
	s, err := Open(testConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Reader().Next(context.Background(), 1)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestErrFullAndRecoveryAfterAck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		segBytes, maxByte int64
	}{
		{"several segments", 1024, 4096},
		{"cap of one segment", 4096, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t.TempDir())
			cfg.SegmentBytes, cfg.MaxBytes = tt.segBytes, tt.maxByte
			s := mustOpen(t, cfg)
			var last uint64
			for {
				seq, err := s.Append(payloadFor(last + 1))
				if errors.Is(err, ErrFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				last = seq
			}
			st := s.Stats()
			if st.BytesOnDisk > cfg.MaxBytes || st.FullRejections != 1 || st.LastSeq != last {
				t.Fatalf("stats at full: %+v", st)
			}
			if _, err := s.AppendSync(payloadFor(last + 1)); !errors.Is(err, ErrFull) {
				t.Fatalf("AppendSync when full = %v, want ErrFull", err)
			}
			// Nothing spooled was lost; acking frees space and appends work again.
			readAll(t, s, 1<<20, last, true)
			seq, err := s.Append(payloadFor(last + 1))
			if err != nil || seq != last+1 {
				t.Fatalf("Append after ack = %d, %v; want %d", seq, err, last+1)
			}
			readAll(t, s, 10, last+1, true)
		})
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	if _, err := s.Append(make([]byte, cfg.SegmentBytes)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of a segment-sized payload = %v, want ErrTooLarge", err)
	}
	max := cfg.SegmentBytes - segHeaderSize - recHeaderSize
	if _, err := s.Append(make([]byte, max)); err != nil {
		t.Fatalf("Append of the largest payload: %v", err)
	}
}

func TestDedupTokenStableAcrossRetryAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 50)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	first, err := s.Reader().Next(context.Background(), 20)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 10) // more data arrives while the batch is being retried
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	retry, err := s.Reader().Next(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if retry.Token != first.Token || retry.FirstSeq != first.FirstSeq || retry.LastSeq != first.LastSeq {
		t.Fatalf("retry got %d..%d %s, want %d..%d %s", retry.FirstSeq, retry.LastSeq, retry.Token, first.FirstSeq, first.LastSeq, first.Token)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, cfg)
	again, err := s.Reader().Next(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if again.Token != first.Token || len(again.Records) != len(first.Records) {
		t.Fatalf("after restart got %d..%d %s, want %d..%d %s", again.FirstSeq, again.LastSeq, again.Token, first.FirstSeq, first.LastSeq, first.Token)
	}
	checkBatch(t, again)
	if err := s.Reader().Ack(again.LastSeq); err != nil {
		t.Fatal(err)
	}
	next, err := s.Reader().Next(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if next.Token == first.Token || next.FirstSeq != first.LastSeq+1 || next.LastSeq != 60 {
		t.Fatalf("next batch %d..%d %s", next.FirstSeq, next.LastSeq, next.Token)
	}
}

func TestAppendSyncWaitsForFsync(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.SyncInterval = time.Hour // only strict appends cause fsyncs
	s := mustOpen(t, cfg)
	before := s.Stats().Fsyncs
	seq, err := s.AppendSync(payloadFor(1))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.SyncedSeq < seq || st.Fsyncs != before+1 {
		t.Fatalf("after AppendSync: %+v (fsyncs before %d)", st, before)
	}
	// Plain Append does not fsync.
	appendN(t, s, 5)
	if got := s.Stats(); got.Fsyncs != st.Fsyncs || got.SyncedSeq != seq {
		t.Fatalf("Append fsynced: %+v", got)
	}
}

func TestConcurrentAppendSyncSharesFsyncs(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.SyncInterval = time.Hour
	cfg.SegmentBytes = 1 << 20
	s := mustOpen(t, cfg)
	const goroutines, each = 32, 20
	before := s.Stats().Fsyncs
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				seq, err := s.AppendSync([]byte("strict"))
				if err != nil {
					errc <- err
					return
				}
				if st := s.Stats(); st.SyncedSeq < seq {
					errc <- errors.New("AppendSync returned before its fsync")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	fsyncs := s.Stats().Fsyncs - before
	t.Logf("%d AppendSync calls shared %d fsyncs (%.1f calls per fsync)", goroutines*each, fsyncs, float64(goroutines*each)/float64(fsyncs))
	if fsyncs >= goroutines*each {
		t.Fatalf("%d fsyncs for %d AppendSync calls: no group commit", fsyncs, goroutines*each)
	}
}

func TestConcurrentAppendersAndReader(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testConfig(t.TempDir()))
	const goroutines, each = 8, 300
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := s.Append([]byte("concurrent record")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var next uint64 = 1
	for next <= goroutines*each {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := s.Reader().Next(ctx, 97)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Records {
			if r.Seq != next || string(r.Payload) != "concurrent record" {
				t.Fatalf("record %d: %q, want seq %d", r.Seq, r.Payload, next)
			}
			next++
		}
		if err := s.Reader().Ack(b.LastSeq); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

func TestSecondOpenOfSameDirFails(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	mustOpen(t, cfg)
	if s, err := Open(cfg); err == nil {
		s.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"tiny segments", Config{Dir: t.TempDir(), SegmentBytes: 10}},
		{"cap below a segment", Config{Dir: t.TempDir(), SegmentBytes: 1 << 20, MaxBytes: 1 << 10}},
		{"negative interval", Config{Dir: t.TempDir(), SyncInterval: -time.Second}},
	}
	for _, tt := range tests {
		if s, err := Open(tt.cfg); err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", tt.name)
		}
	}
}

func TestBadCheckpointIsReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, checkpointName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := Open(testConfig(dir)); !errors.As(err, &ce) {
		t.Fatalf("Open with a bad checkpoint = %v, want *CorruptError", err)
	}
}

func checkDiskBytes(t *testing.T, s *Spool, dir string) {
	t.Helper()
	var sum int64
	for _, f := range segFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sum += fi.Size()
	}
	if st := s.Stats(); st.BytesOnDisk != sum || st.Segments != len(segFiles(t, dir)) {
		t.Errorf("Stats says %d bytes in %d segments; the directory has %d bytes in %d", st.BytesOnDisk, st.Segments, sum, len(segFiles(t, dir)))
	}
}
