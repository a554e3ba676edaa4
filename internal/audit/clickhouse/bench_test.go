package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

const benchBatch = 10000

// BenchmarkInsert measures sustained inserts into the 18.16 server through Store.Write next
// to the ceiling, a bulk insert of the same rows by clickhouse-client from a file (TabSeparated
// text and the server's own Native format). Each op does all three in turn, so a load that
// comes and goes on the machine weighs on each alike; the metrics are events/s of each and
// the ratio of Store.Write to the faster client format.
//
//	go test -run '^$' -bench Insert -benchtime 10x ./internal/audit/clickhouse/
//
// batch_10k inserts one batch of 10,000 realistic events (about 500 bytes each in the
// spool, about 840 as TabSeparated) per INSERT, the shipper's batch size; batch_100k ten of
// them in one INSERT.
func BenchmarkInsert(b *testing.B) {
	srv := testenv.SharedClickHouse(b)
	cfg := newOldTable(b)
	s := mustOpen(b, cfg)
	ctx := context.Background()
	batch := storetest.Realistic("gw-bench", 1, benchBatch, base)
	var big []*event.Event
	for i := range 10 {
		big = append(big, storetest.Realistic(fmt.Sprint("gw-bench-", i), 1, benchBatch, base)...)
	}
	// The same rows, as the server holds them, exported by the server itself.
	if err := s.Write(ctx, "tok-export", batch); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for _, format := range []string{"TabSeparated", "Native"} {
		q := fmt.Sprintf("SELECT * FROM %s WHERE gateway_instance = 'gw-bench' FORMAT %s", s.table, format)
		out, err := exec.Command("clickhouse-client", append(srv.ClientArgs(), "--query", q)...).Output()
		if err != nil {
			b.Fatalf("export the rows with clickhouse-client: %v", err)
		}
		for name, data := range map[string][]byte{format: out, format + "_x10": bytes.Repeat(out, 10)} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	clientInsert := func(b *testing.B, file, format string) time.Duration {
		in, err := os.Open(filepath.Join(dir, file))
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		cmd := exec.Command("clickhouse-client", append(srv.ClientArgs(), "--query", "INSERT INTO "+s.table+" FORMAT "+format)...)
		var stderr bytes.Buffer
		cmd.Stdin, cmd.Stderr = in, &stderr
		began := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("clickhouse-client insert: %v: %s", err, stderr.String())
		}
		return time.Since(began)
	}
	for _, run := range []struct {
		name   string
		events []*event.Event
		suffix string
	}{{"batch_10k", batch, ""}, {"batch_100k", big, "_x10"}} {
		b.Run(run.name, func(b *testing.B) {
			var store, tsv, native time.Duration
			for i := 0; b.Loop(); i++ {
				began := time.Now()
				if err := s.Write(ctx, fmt.Sprint("tok-", run.name, i), run.events); err != nil {
					b.Fatal(err)
				}
				store += time.Since(began)
				tsv += clientInsert(b, "TabSeparated"+run.suffix, "TabSeparated")
				native += clientInsert(b, "Native"+run.suffix, "Native")
			}
			rate := func(d time.Duration) float64 { return float64(len(run.events)) * float64(b.N) / d.Seconds() }
			b.ReportMetric(rate(store), "store_events/s")
			b.ReportMetric(rate(tsv), "client_tsv_events/s")
			b.ReportMetric(rate(native), "client_native_events/s")
			b.ReportMetric(rate(store)/max(rate(tsv), rate(native)), "store/ceiling")
			b.ReportMetric(0, "ns/op") // the op is three inserts; its time means nothing alone
		})
	}
}
