package ship_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/clickhouse"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/audit/spool"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// pipelineEvents is the load of one run: enough for several full 10,000-event batches.
const pipelineEvents = 200_000

// benchPipeline measures the sustained rate of the whole audit path after capture: records
// appended to a real spool (as requests would), group-committed, read back in batches,
// decoded and written by the shipper into the store until the spool is empty. Beside it, in
// the same run, the same rows go straight into the store in 10,000-event batches: the ratio is
// what the spool and the shipper cost on top of the store.
func benchPipeline(b *testing.B, open func(b *testing.B) ship.Sink) {
	evs := storetest.Realistic("bench-pipeline", 1, pipelineEvents, time.Now().Add(-time.Hour))
	payloads := make([][]byte, len(evs))
	for i, e := range evs {
		payloads[i] = event.Marshal(nil, e)
	}
	b.Run("spool+shipper", func(b *testing.B) {
		var total time.Duration
		for i := 0; b.Loop(); i++ {
			sink := open(b)
			sp, err := spool.Open(spool.Config{Dir: b.TempDir(), Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			sh, _ := ship.New(ship.Config{Source: sp.Reader(), Open: func(context.Context) (ship.Sink, error) { return sink, nil },
				Instance: fmt.Sprintf("bench-%d", i), FlushInterval: 10 * time.Millisecond, Logger: quiet})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			began := time.Now()
			go func() { done <- sh.Run(ctx) }()
			for _, p := range payloads {
				if _, err := sp.Append(p); err != nil {
					b.Fatal(err)
				}
			}
			for sp.Stats().RecordsPending > 0 {
				time.Sleep(time.Millisecond)
			}
			total += time.Since(began)
			b.Logf("%d batches, %d retries", sh.Stats().Batches, sh.Stats().Retries)
			cancel()
			<-done
			sp.Close()
		}
		b.ReportMetric(float64(b.N*pipelineEvents)/total.Seconds(), "events/s")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("store-direct", func(b *testing.B) {
		var total time.Duration
		for i := 0; b.Loop(); i++ {
			sink := open(b)
			for j := range evs {
				evs[j].GatewayInstance = fmt.Sprintf("direct-%d", i)
			}
			began := time.Now()
			for j := 0; j < len(evs); j += ship.DefaultMaxBatch {
				if err := sink.Write(context.Background(), fmt.Sprintf("direct-%d-%d", i, j), evs[j:min(j+ship.DefaultMaxBatch, len(evs))]); err != nil {
					b.Fatal(err)
				}
			}
			total += time.Since(began)
		}
		b.ReportMetric(float64(b.N*pipelineEvents)/total.Seconds(), "events/s")
		b.ReportMetric(0, "ns/op")
	})
}

func BenchmarkPipelineChDB(b *testing.B) {
	lib, helper := testenv.ChDB(b)
	benchPipeline(b, func(b *testing.B) ship.Sink {
		s, err := chdb.Open(context.Background(), chdb.Config{Dir: b.TempDir(), Library: lib, Helper: helper})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}

// BenchmarkPipelineClickHouse runs against Debian's 18.16 server on a table it accepts.
func BenchmarkPipelineClickHouse(b *testing.B) {
	srv := testenv.SharedClickHouse(b)
	n := 0
	benchPipeline(b, func(b *testing.B) ship.Sink {
		n++
		table := fmt.Sprintf("bench_pipeline_%d", n)
		return openLegacyTable(b, srv, table)
	})
}

func openLegacyTable(b *testing.B, srv *testenv.ClickHouse, table string) *clickhouse.Store {
	for _, q := range []string{"DROP TABLE IF EXISTS default." + table, fmt.Sprintf(testenv.LegacyAuditTableDDL, "default."+table)} {
		if _, err := srv.Query(q); err != nil {
			b.Fatal(err)
		}
	}
	s, err := clickhouse.Open(context.Background(), clickhouse.Config{Addresses: []string{srv.Addr},
		Username: srv.User, Password: srv.Password, Database: "default", Table: table, SkipMigrate: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = s.Exec(context.Background(), "DROP TABLE IF EXISTS default."+table)
		s.Close()
	})
	return s
}
