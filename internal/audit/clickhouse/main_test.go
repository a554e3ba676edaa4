package clickhouse

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithClickHouse())) }

// oldTableDDL is the audit table as ClickHouse 18.16 accepts it (testenv.LegacyAuditTableDDL).
const oldTableDDL = testenv.LegacyAuditTableDDL

// newOldTable creates a fresh 18.16-compatible table named after the test on the shared
// server and returns a config pointing at it; the table is dropped when the test ends.
func newOldTable(t testing.TB) Config {
	t.Helper()
	srv := testenv.SharedClickHouse(t)
	table := strings.NewReplacer("/", "_", "-", "_").Replace(strings.ToLower(t.Name()))
	cfg := Config{
		Addresses: []string{srv.Addr}, Username: srv.User, Password: srv.Password,
		Database: "default", Table: table, SkipMigrate: true,
	}
	admin := mustOpenConn(t, cfg)
	ctx := context.Background()
	if err := admin.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
		t.Fatal(err)
	}
	if err := admin.Exec(ctx, fmt.Sprintf(oldTableDDL, table)); err != nil {
		t.Fatalf("create the 18.16 test table: %v", err)
	}
	t.Cleanup(func() {
		// The server may be down at the end of an outage test that failed.
		_ = admin.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	})
	return cfg
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ids(events []*event.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventID
	}
	return out
}

// mustOpenConn opens a plain clickhouse-go connection for test setup (DDL, counts).
func mustOpenConn(t testing.TB, cfg Config) driver.Conn {
	t.Helper()
	opts, err := cfg.withDefaults().options()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// base is the start time of test events.
var base = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// events returns n realistic events (about 500 bytes each) of gateway gw from seq first on.
func events(gw string, first uint64, n int) []*event.Event {
	return storetest.Realistic(gw, first, n, base)
}
