package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// damage opens path and applies fn to its bytes, writing back the result.
func damage(t *testing.T, path string, fn func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTornTailRecovered(t *testing.T) {
	t.Parallel()
	const records = 60
	tests := []struct {
		name string
		// damage the directory; return the offset where the last segment must now end, the
		// bytes it must drop and the last good sequence number.
		damage func(t *testing.T, dir string) (file string, off, dropped int64, lastGood uint64)
	}{
		{"truncated mid payload", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			offs := recordOffsets(t, p)
			last := offs[len(offs)-1]
			cut := last + recHeaderSize + int64(len(payloadFor(records)))/2
			if err := os.Truncate(p, cut); err != nil {
				t.Fatal(err)
			}
			return p, last, cut - last, records - 1
		}},
		{"truncated mid header", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			offs := recordOffsets(t, p)
			last := offs[len(offs)-1]
			if err := os.Truncate(p, last+5); err != nil {
				t.Fatal(err)
			}
			return p, last, 5, records - 1
		}},
		{"flipped payload byte", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			offs := recordOffsets(t, p)
			last := offs[len(offs)-1]
			var size int64
			damage(t, p, func(b []byte) []byte { size = int64(len(b)); b[len(b)-1] ^= 0x40; return b })
			return p, last, size - last, records - 1
		}},
		{"flipped sequence byte", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			offs := recordOffsets(t, p)
			last := offs[len(offs)-1]
			var size int64
			damage(t, p, func(b []byte) []byte { size = int64(len(b)); b[last+8] ^= 1; return b })
			return p, last, size - last, records - 1
		}},
		{"damage two records before the end", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			offs := recordOffsets(t, p)
			if len(offs) < 3 {
				t.Skip("last segment too short")
			}
			at := offs[len(offs)-3]
			var size int64
			damage(t, p, func(b []byte) []byte { size = int64(len(b)); b[at+recHeaderSize] ^= 0xff; return b })
			return p, at, size - at, records - 3
		}},
		{"zeros after the last record", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := lastSegPath(t, dir)
			var size int64
			damage(t, p, func(b []byte) []byte { size = int64(len(b)); return append(b, make([]byte, 100)...) })
			return p, size, 100, records
		}},
		{"torn header of a new segment", func(t *testing.T, dir string) (string, int64, int64, uint64) {
			p := filepath.Join(dir, segName(records+1))
			if err := os.WriteFile(p, []byte("KAS"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p, 0, 3, records
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := testConfig(dir)
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, records)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			file, off, dropped, lastGood := tt.damage(t, dir)

			var logs lockedBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s = mustOpen(t, cfg)
			if l := logs.String(); !strings.Contains(l, "spool torn tail cut off") || !strings.Contains(l, file) ||
				!strings.Contains(l, fmt.Sprintf("dropped_bytes=%d", dropped)) {
				t.Errorf("log does not report the torn tail: %s", l)
			}
			rec := s.Recovered()
			if rec == nil || rec.File != file || rec.Offset != off || rec.DroppedBytes != dropped {
				t.Fatalf("Recovered() = %+v, want file %s offset %d dropped %d", rec, file, off, dropped)
			}
			st := s.Stats()
			if st.TornTailRecoveries != 1 || st.TornBytesDropped != dropped || st.LastSeq != lastGood {
				t.Fatalf("stats: %+v, want last seq %d", st, lastGood)
			}
			seq, err := s.Append(payloadFor(lastGood + 1))
			if err != nil || seq != lastGood+1 {
				t.Fatalf("Append after recovery = %d, %v; want %d", seq, err, lastGood+1)
			}
			got := readAll(t, s, 1000, seq, true)
			if len(got) != int(seq) {
				t.Fatalf("read %d records, want %d", len(got), seq)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, cfg)
			if rec := s.Recovered(); rec != nil {
				t.Fatalf("clean reopen reported %+v", rec)
			}
		})
	}
}

func TestCorruptionInOlderSegmentIsReported(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// damage returns the error position expected.
		damage func(t *testing.T, dir string, files []string) (file string, off int64, seq uint64)
	}{
		{"flipped payload byte", func(t *testing.T, dir string, files []string) (string, int64, uint64) {
			p := filepath.Join(dir, files[0])
			offs := recordOffsets(t, p)
			damage(t, p, func(b []byte) []byte { b[offs[2]+recHeaderSize] ^= 0x01; return b })
			return p, offs[2], 3
		}},
		{"truncated mid record", func(t *testing.T, dir string, files []string) (string, int64, uint64) {
			p := filepath.Join(dir, files[1])
			first, _ := parseSegName(files[1])
			offs := recordOffsets(t, p)
			if err := os.Truncate(p, offs[1]+7); err != nil {
				t.Fatal(err)
			}
			return p, offs[1], first + 1
		}},
		{"missing middle segment", func(t *testing.T, dir string, files []string) (string, int64, uint64) {
			if err := os.Remove(filepath.Join(dir, files[1])); err != nil {
				t.Fatal(err)
			}
			first, _ := parseSegName(files[1])
			return filepath.Join(dir, files[2]), 0, first
		}},
		{"missing oldest segment", func(t *testing.T, dir string, files []string) (string, int64, uint64) {
			if err := os.Remove(filepath.Join(dir, files[0])); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, files[1]), 0, 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := testConfig(dir)
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, 100)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) < 4 {
				t.Fatalf("want at least 4 segments, got %v", files)
			}
			file, off, seq := tt.damage(t, dir, files)
			_, err = Open(cfg)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Open = %v, want *CorruptError", err)
			}
			if ce.File != file || ce.Offset != off || ce.Seq != seq {
				t.Fatalf("Open reported %s:%d seq %d (%s), want %s:%d seq %d", ce.File, ce.Offset, ce.Seq, ce.Reason, file, off, seq)
			}
			t.Log(err)
		})
	}
}

func TestCorruptionSeenByReaderIsReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	appendN(t, s, 100)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	p := filepath.Join(dir, files[0])
	offs := recordOffsets(t, p)
	damage(t, p, func(b []byte) []byte { b[offs[4]+recHeaderSize] ^= 0x80; return b })
	_, err := s.Reader().Next(context.Background(), 1000)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != p || ce.Offset != offs[4] || ce.Seq != 5 {
		t.Fatalf("Next = %v, want *CorruptError at %s:%d seq 5", err, p, offs[4])
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
