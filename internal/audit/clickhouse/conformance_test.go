package clickhouse

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

// TestConformance runs the audit stores' conformance suite with the production schema
// against the modern server KACCESS_CLICKHOUSE_ADDR names (`make test-clickhouse
// CLICKHOUSE_ADDR=host:9000`; KACCESS_CLICKHOUSE_USER and KACCESS_CLICKHOUSE_PASSWORD when
// "default" without a password will not do). It migrates a database of its own and drops it
// at the end. Debian's 18.16, the only server this machine has, can hold neither the
// production schema (DateTime64, Map, TTL) nor a deduplication token, so without the variable
// the suite runs on chDB only (internal/audit/chdb), and the writer's batching, retries and
// reconnects are proved on 18.16 by the other tests of this package.
func TestConformance(t *testing.T) {
	addr, ok := testenv.ModernClickHouseAddr()
	if !ok {
		t.Skip("set " + testenv.ClickHouseAddrEnv + "=host:port of a ClickHouse 22.2+ server to run the conformance suite against it")
	}
	cfg := Config{
		Addresses: []string{addr},
		Database:  fmt.Sprintf("kaccess_conformance_%d", time.Now().UnixNano()),
		Username:  os.Getenv("KACCESS_CLICKHOUSE_USER"),
		Password:  os.Getenv("KACCESS_CLICKHOUSE_PASSWORD"),
	}
	s := mustOpen(t, cfg)
	t.Cleanup(func() {
		if err := s.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quote(cfg.Database)); err != nil {
			t.Errorf("drop the test database %s: %v", cfg.Database, err)
		}
	})
	if !s.DedupToken() {
		t.Fatalf("server %s at %s is too old for the production schema: use 22.2 or newer", s.ServerVersion(), addr)
	}
	storetest.Run(t, func(*testing.T) storetest.Store { return s })
}
