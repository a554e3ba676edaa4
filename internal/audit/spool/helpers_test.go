package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func testConfig(dir string) Config {
	return Config{
		Dir:          dir,
		SegmentBytes: 4 << 10,
		MaxBytes:     1 << 20,
		SyncInterval: 2 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func mustOpen(t testing.TB, cfg Config) *Spool {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// payloadFor is the deterministic payload of the record with sequence number seq.
func payloadFor(seq uint64) []byte {
	n := int(seq*37%300) + 1
	unit := []byte(fmt.Sprintf("r%d.", seq))
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

func appendN(t testing.TB, s *Spool, n int) (first, last uint64) {
	t.Helper()
	for i := 0; i < n; i++ {
		want := s.Stats().LastSeq + 1
		seq, err := s.Append(payloadFor(want))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if seq != want {
			t.Fatalf("Append returned seq %d, want %d", seq, want)
		}
		if i == 0 {
			first = seq
		}
		last = seq
	}
	return first, last
}

// readAll reads batches of at most max records until lastSeq, checking order and payloads,
// acking each batch when ack is set.
func readAll(t testing.TB, s *Spool, max int, lastSeq uint64, ack bool) []Record {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	var out []Record
	for len(out) == 0 || out[len(out)-1].Seq < lastSeq {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := s.Reader().Next(ctx, max)
		cancel()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		checkBatch(t, b)
		out = append(out, b.Records...)
		if ack {
			if err := s.Reader().Ack(b.LastSeq); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		} else {
			break
		}
	}
	return out
}

func checkBatch(t testing.TB, b Batch) {
	t.Helper()
	if len(b.Records) == 0 || b.Records[0].Seq != b.FirstSeq || b.Records[len(b.Records)-1].Seq != b.LastSeq {
		t.Fatalf("batch %d..%d has records %v", b.FirstSeq, b.LastSeq, seqs(b.Records))
	}
	for i, r := range b.Records {
		if r.Seq != b.FirstSeq+uint64(i) {
			t.Fatalf("record %d has seq %d, want %d", i, r.Seq, b.FirstSeq+uint64(i))
		}
		if !bytes.Equal(r.Payload, payloadFor(r.Seq)) {
			t.Fatalf("record %d: payload %q, want %q", r.Seq, r.Payload, payloadFor(r.Seq))
		}
	}
}

func seqs(rs []Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	slices.Sort(m)
	return m
}

func lastSegPath(t testing.TB, dir string) string {
	t.Helper()
	f := segFiles(t, dir)
	if len(f) == 0 {
		t.Fatal("no segments")
	}
	return filepath.Join(dir, f[len(f)-1])
}

// recordOffsets lists the offset of every record in a segment file.
func recordOffsets(t testing.TB, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := segHeaderSize; off < int64(len(b)); {
		offs = append(offs, off)
		n := int64(uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16 | uint32(b[off+3])<<24)
		off += recHeaderSize + n
	}
	return offs
}
