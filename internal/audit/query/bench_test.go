package query

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

// benchEvents is how many events the query benchmarks load: KACCESS_BENCH_EVENTS, default
// 1,000,000 (the target is 10,000,000; loading them takes a few minutes).
func benchEvents(b *testing.B) int {
	if v := os.Getenv("KACCESS_BENCH_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10_000 {
			b.Fatalf("KACCESS_BENCH_EVENTS=%q: want a number of at least 10000", v)
		}
		return n
	}
	return 1_000_000
}

// BenchmarkQueries loads benchEvents realistic events, two a second (172,800 a day; six
// users, so one user's day is about 28,800 events), into a fresh chDB store and times the
// API's questions over the second day (the first day when there are fewer than two).
func BenchmarkQueries(b *testing.B) {
	lib, helper := testenv.ChDB(b)
	ctx := context.Background()
	s, err := chdb.Open(ctx, chdb.Config{Dir: b.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	n := benchEvents(b)
	const batch = 10_000
	base := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	batches := n / batch
	step := batch * 500 * time.Millisecond // storetest.Realistic's spacing: batches follow each other
	loadStart := time.Now()
	for i := range batches {
		events := storetest.Realistic(fmt.Sprintf("bench-%d", i%4), uint64(i*batch+1), batch, base.Add(time.Duration(i)*step))
		if err := s.Write(ctx, fmt.Sprint("bench-load-", i), events); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d events in %s", batches*batch, time.Since(loadStart).Round(time.Millisecond))
	g := &Engine{Querier: s}
	first := base
	if n >= 2*172_800 {
		first = base.Add(24 * time.Hour)
	}
	day := Request{From: first, To: first.Add(24 * time.Hour), Filter: `user = "carol"`}

	b.Run("SearchOneUserDay", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := g.Search(ctx, day); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SearchOneUserDayPage2", func(b *testing.B) {
		_, next, err := g.Search(ctx, day)
		if err != nil || next == "" {
			b.Fatalf("first page: %q %v", next, err)
		}
		req := day
		req.PageToken = next
		for b.Loop() {
			if _, _, err := g.Search(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SearchFilteredDay", func(b *testing.B) {
		req := day
		req.Filter = `resource = "secrets" AND verb:("get" "list") AND NOT decision = "allow"`
		for b.Loop() {
			if _, _, err := g.Search(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AggregateDayByVerb", func(b *testing.B) {
		for b.Loop() {
			if _, err := g.Aggregate(ctx, AggregateRequest{From: day.From, To: day.To, Bucket: time.Hour, GroupBy: []string{"user", "verb"}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ExportDay", func(b *testing.B) {
		var rows int64
		req := day
		req.Filter = ""
		for b.Loop() {
			n, err := g.Export(ctx, req, func(*event.Event) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			rows += n
		}
		b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "events/s")
	})
}
