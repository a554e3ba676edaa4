package spool

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

func benchConfig(b *testing.B) Config {
	return Config{
		Dir:          b.TempDir(),
		SegmentBytes: 64 << 20,
		MaxBytes:     1 << 40,
		SyncInterval: 100 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// BenchmarkAppend is the capture cost on the request path: one 512-byte event handed to
// the OS, fsync left to group commit.
func BenchmarkAppend(b *testing.B) {
	s := mustOpen(b, benchConfig(b))
	p := bytes.Repeat([]byte("e"), 512)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendParallel(b *testing.B) {
	s := mustOpen(b, benchConfig(b))
	p := bytes.Repeat([]byte("e"), 512)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAppendSync is strict mode: 32 goroutines, each waiting for the fsync covering its
// record; fsyncs/op shows how many callers share one fsync.
func BenchmarkAppendSync(b *testing.B) {
	s := mustOpen(b, benchConfig(b))
	p := bytes.Repeat([]byte("e"), 512)
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0))) // 32 goroutines
	b.ReportAllocs()
	before := s.Stats().Fsyncs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.AppendSync(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(s.Stats().Fsyncs-before)/float64(b.N), "fsyncs/op")
}

// BenchmarkThroughput appends 1 KiB records from one goroutine while a reader reads them in
// batches of up to 10,000 and acks each batch (checkpoint written with fsync each time).
func BenchmarkThroughput(b *testing.B) {
	cfg := benchConfig(b)
	cfg.SyncInterval = 20 * time.Millisecond
	cfg.MaxBytes = 4 << 30
	s := mustOpen(b, cfg)
	p := bytes.Repeat([]byte("t"), 1024)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := s.Append(p); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ctx := context.Background()
	var read uint64
	for read < uint64(b.N) {
		batch, err := s.Reader().Next(ctx, 10000)
		if err != nil {
			b.Fatal(err)
		}
		read += uint64(len(batch.Records))
		if err := s.Reader().Ack(batch.LastSeq); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
