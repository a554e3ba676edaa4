package chdb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
	"github.com/kaccess/kaccess/internal/audit/storetest"
)

const benchBatch = 10_000

// benchBatches returns n batches of realistic events (about 500 bytes each, no bodies).
func benchBatches(n int) [][]*event.Event {
	out := make([][]*event.Event, n)
	start := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for i := range out {
		out[i] = storetest.Realistic("bench-gw", uint64(i*benchBatch+1), benchBatch, start.Add(time.Duration(i)*time.Hour))
	}
	return out
}

func reportRate(b *testing.B, events int) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWrite is the sustained rate through Store.Write: encode, pipe to the helper, parse,
// write a part, in batches of 10,000 as the shipper sends them.
func BenchmarkWrite(b *testing.B) {
	s := openTest(b, Config{})
	ctx := context.Background()
	batches := benchBatches(8)
	b.Logf("bytes per event: %d as JSON, %d as RowBinary", rowBytes(batches[0], appendRow), rowBytes(batches[0], appendRowBinary))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := s.Write(ctx, fmt.Sprint("bench-", i), batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*benchBatch)
}

// BenchmarkCeilingOneInsert inserts the rows of all batches with one query from one RowBinary
// file: what the engine does with the same data without per-batch costs.
func BenchmarkCeilingOneInsert(b *testing.B) {
	s := openTest(b, Config{})
	ctx := context.Background()
	batches := benchBatches(8)
	var data []byte
	for _, batch := range batches {
		for _, e := range batch {
			data = appendRowBinary(data, e)
		}
	}
	path := filepath.Join(b.TempDir(), "all.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	q := fmt.Sprintf("INSERT INTO kaccess.audit_events FROM INFILE %s FORMAT %s", schema.StringLiteral(path), insertFormat)
	b.ResetTimer()
	for b.Loop() {
		if err := s.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*len(batches)*benchBatch)
}

// BenchmarkCeilingInsertSelect copies stored rows inside the engine: no parsing at all, the
// bound on what writing parts costs on this machine.
func BenchmarkCeilingInsertSelect(b *testing.B) {
	s := openTest(b, Config{})
	ctx := context.Background()
	batches := benchBatches(8)
	for i, batch := range batches {
		if err := s.Write(ctx, fmt.Sprint("seed-", i), batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Exec(ctx, "CREATE TABLE kaccess.copy AS kaccess.audit_events"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Exec(ctx, "INSERT INTO kaccess.copy SELECT * FROM kaccess.audit_events"); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*len(batches)*benchBatch)
}

// BenchmarkInsertFormats compares the input formats Write could use, per batch of 10,000, with
// the same deduplication settings. RowBinary cannot travel in the query text (it holds NUL
// bytes and the engine takes the query as a C string), so it goes through a file.
func BenchmarkInsertFormats(b *testing.B) {
	batches := benchBatches(4)
	settings := func(i int) string {
		return fmt.Sprintf("SETTINGS insert_deduplication_token = 'fmt-%d', deduplicate_blocks_in_dependent_materialized_views = 1", i)
	}
	b.Run("JSONCompactEachRow", func(b *testing.B) {
		s := openTest(b, Config{})
		for i := 0; b.Loop(); i++ {
			q := fmt.Appendf(nil, "INSERT INTO kaccess.audit_events %s FORMAT JSONCompactEachRow\n", settings(i))
			for _, e := range batches[i%len(batches)] {
				q = appendRow(q, e)
			}
			if _, err := s.query(context.Background(), q, "TabSeparated"); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N*benchBatch)
	})
	b.Run("JSONEachRow", func(b *testing.B) {
		s := openTest(b, Config{})
		names := schema.ColumnNames()
		for i := 0; b.Loop(); i++ {
			q := fmt.Appendf(nil, "INSERT INTO kaccess.audit_events %s FORMAT JSONEachRow\n", settings(i))
			for _, e := range batches[i%len(batches)] {
				q = append(q, '{')
				for j, v := range schema.Values(e) {
					if j > 0 {
						q = append(q, ',')
					}
					q = appendString(q, names[j])
					q = append(q, ':')
					q = appendValue(q, v)
				}
				q = append(q, '}', '\n')
			}
			if _, err := s.query(context.Background(), q, "TabSeparated"); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N*benchBatch)
	})
	b.Run("RowBinaryFile", func(b *testing.B) {
		s := openTest(b, Config{})
		path := filepath.Join(b.TempDir(), "batch.bin")
		for i := 0; b.Loop(); i++ {
			var data []byte
			for _, e := range batches[i%len(batches)] {
				data = appendRowBinary(data, e)
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				b.Fatal(err)
			}
			q := fmt.Sprintf("INSERT INTO kaccess.audit_events FROM INFILE %s %s FORMAT RowBinary", schema.StringLiteral(path), settings(i))
			if err := s.Exec(context.Background(), q); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N*benchBatch)
	})
}

// BenchmarkEncode is the gateway's side of Write: encoding a batch.
func BenchmarkEncode(b *testing.B) {
	batch := benchBatches(1)[0]
	var q []byte
	for b.Loop() {
		q = q[:0]
		for _, e := range batch {
			q = appendRowBinary(q, e)
		}
	}
	reportRate(b, b.N*benchBatch)
}

func rowBytes(events []*event.Event, enc func([]byte, *event.Event) []byte) int {
	var n int
	for _, e := range events {
		n += len(enc(nil, e))
	}
	return n / len(events)
}

// BenchmarkWriteSchemaCost is BenchmarkWrite with parts of the schema dropped, to show what the
// first-seen rollup and the by_object projection cost on the write path.
func BenchmarkWriteSchemaCost(b *testing.B) {
	for _, v := range []struct {
		name string
		drop []string
	}{
		{"full", nil},
		{"no_rollup", []string{"DROP VIEW kaccess.audit_first_seen_mv"}},
		{"no_rollup_no_projection", []string{"DROP VIEW kaccess.audit_first_seen_mv", "ALTER TABLE kaccess.audit_events DROP PROJECTION by_object"}},
	} {
		b.Run(v.name, func(b *testing.B) {
			s := openTest(b, Config{})
			ctx := context.Background()
			for _, q := range v.drop {
				if err := s.Exec(ctx, q); err != nil {
					b.Fatal(err)
				}
			}
			batches := benchBatches(4)
			for i := 0; b.Loop(); i++ {
				if err := s.Write(ctx, fmt.Sprint("cost-", i), batches[i%len(batches)]); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, b.N*benchBatch)
		})
	}
}
