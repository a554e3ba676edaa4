package chdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
	"github.com/kaccess/kaccess/internal/audit/storetest"
)

// The clustered variant needs Keeper and remote servers, which chDB does not have; ClickHouse's
// own parser (formatQuery) at least proves every statement is valid SQL of this version.
func TestClusteredSchemaParses(t *testing.T) {
	s := openTest(t, Config{})
	ms, err := schema.Migrations(schema.Options{Cluster: "audit-cluster", Retention: 90 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for _, stmt := range m.Statements {
			out, err := s.Query(context.Background(), "SELECT formatQuery("+schema.StringLiteral(stmt)+")", "TabSeparatedRaw")
			if err != nil {
				t.Errorf("migration %d (%s) does not parse: %v\n%s", m.Version, m.Name, err, stmt)
				continue
			}
			if !strings.Contains(string(out), "ON CLUSTER `audit-cluster`") {
				t.Errorf("formatted statement lost ON CLUSTER:\n%s", out)
			}
		}
	}
}

// TestMigrateIsIdempotent runs every statement again, and Migrate again, on a migrated store:
// what two gateways starting at once would do.
func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	ms, err := schema.Migrations(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for _, stmt := range m.Statements {
			if err := s.Exec(ctx, stmt); err != nil {
				t.Errorf("migration %d run twice: %v", m.Version, err)
			}
		}
	}
	if err := schema.Migrate(ctx, s, schema.Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := schema.AppliedVersions(ctx, s, schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, m := range ms {
		want = append(want, m.Version)
	}
	if !slices.Equal(got, want) {
		t.Errorf("applied versions %v, want %v", got, want)
	}
}

func TestRetentionFollowsConfig(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	engineFull := func(s *Store) string {
		rows, err := s.QueryStrings(ctx, "SELECT engine_full FROM system.tables WHERE database = 'kaccess' AND name = 'audit_events'")
		if err != nil || len(rows) != 1 {
			t.Fatalf("engine_full: %v %v", rows, err)
		}
		return rows[0]
	}
	for _, step := range []struct {
		retention time.Duration
		want      string // in engine_full; "" = no TTL
	}{
		{30 * 24 * time.Hour, "TTL toDate(time) + toIntervalDay(30)"},
		{7 * 24 * time.Hour, "TTL toDate(time) + toIntervalDay(7)"},
		{0, ""},
		{36 * time.Hour, "TTL toDate(time) + toIntervalDay(2)"},
	} {
		s := openTest(t, Config{Dir: dir, Retention: step.retention})
		got := engineFull(s)
		if step.want == "" && strings.Contains(got, " TTL ") || step.want != "" && !strings.Contains(got, step.want) {
			t.Errorf("retention %s: engine is %q, want %q", step.retention, got, step.want)
		}
		if !strings.Contains(got, "ttl_only_drop_parts = 1") {
			t.Errorf("retention %s: ttl_only_drop_parts lost: %s", step.retention, got)
		}
		s.Close()
	}
}

// TestFirstSeenRollup checks the materialized view counts each allowed event once, retries
// included, and nothing that was denied, refused or failed: first seen means done.
func TestFirstSeenRollup(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	evs := storetest.Realistic("gw-rollup", 1, 1000, time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC))
	for range 2 {
		if err := s.Write(ctx, "rollup-batch", evs); err != nil {
			t.Fatal(err)
		}
	}
	out, err := s.Query(ctx, "SELECT sum(events), toString(min(first_seen)), toString(max(last_seen)) FROM kaccess.audit_first_seen", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	var allowed []*event.Event
	for _, e := range evs {
		if e.Decision == event.DecisionAllow {
			allowed = append(allowed, e)
		}
	}
	if len(allowed) == 0 || len(allowed) == len(evs) {
		t.Fatalf("%d of %d generated events allowed: the test needs both kinds", len(allowed), len(evs))
	}
	want := fmt.Sprintf("%d\t%s\t%s\n", len(allowed), allowed[0].Time.Format(timeLayout), allowed[len(allowed)-1].Time.Format(timeLayout))
	if string(out) != want {
		t.Errorf("rollup = %q, want %q", out, want)
	}
	out, err = s.Query(ctx, "SELECT count() FROM (SELECT 1 FROM kaccess.audit_first_seen GROUP BY cluster, user, resource, verb, namespace)", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) == "0" {
		t.Error("rollup is empty")
	}
}

// TestObjectQueriesUseProjection proves the "what happened to this object" path: the by_object
// projection, not a scan of the whole day, answers a query by namespace, resource and name.
func TestObjectQueriesUseProjection(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	// Enough rows for many granules in one day's partition: with one granule, reading it
	// all is the cheapest plan and no index is used.
	evs := storetest.Realistic("gw-proj", 1, 100_000, time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC))
	for i := 0; i < len(evs); i += 20_000 {
		if err := s.Write(ctx, fmt.Sprint("proj-", i), evs[i:i+20_000]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Exec(ctx, "OPTIMIZE TABLE kaccess.audit_events FINAL"); err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("SELECT event_id FROM kaccess.audit_events WHERE cluster = 'prod-eu-1' AND namespace = %s AND resource = %s AND name = %s",
		schema.StringLiteral(evs[42].Namespace), schema.StringLiteral(evs[42].Resource), schema.StringLiteral(evs[42].Name))
	// By default the projection index is tried from 1,000,000 rows on; lower the bar for the
	// test's 100,000.
	out, err := s.Query(ctx, "EXPLAIN projections = 1 "+q+" SETTINGS min_table_rows_to_use_projection_index = 0", "TabSeparatedRaw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "Name: by_object") || !strings.Contains(string(out), "will be applied") {
		t.Errorf("object query does not use the by_object projection:\n%s", out)
	}
	got, err := s.QueryStrings(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, evs[42].EventID) {
		t.Errorf("object query returned %v, missing %s", got, evs[42].EventID)
	}
}

func TestQueryErrorKeepsHelper(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	pid := s.h.cmd.Process.Pid
	_, err := s.Query(ctx, "SELECT * FROM no_such_table", "")
	var qe *QueryError
	if !errors.As(err, &qe) || !strings.Contains(err.Error(), "no_such_table") {
		t.Fatalf("err = %v, want a QueryError naming the table", err)
	}
	if s.h == nil || s.h.cmd.Process.Pid != pid {
		t.Error("a query error restarted the helper")
	}
}

// TestStringLiteralIsExact: what schema.StringLiteral quotes is what the engine sees, byte for
// byte, NUL and invalid UTF-8 included.
func TestStringLiteralIsExact(t *testing.T) {
	s := openTest(t, Config{})
	in := "a'b\\c\x00d\ne\xff\xfe 東京 \x7f"
	got, err := s.QueryStrings(context.Background(), "SELECT "+schema.StringLiteral(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != in {
		t.Errorf("engine saw %q, want %q", got, in)
	}
}

// A store made before version 3 (no refusal_reason, a rollup view that counted every event)
// is brought up to date at the next open: the column is there and read back, and the rollup
// counts only allowed events from then on.
func TestUpgradeToRefusalReason(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, Config{Dir: dir})
	ms, err := schema.Migrations(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Back to what version 2 left: the old view, no column, version 3 not recorded.
	for _, stmt := range []string{
		"DROP VIEW IF EXISTS kaccess.audit_first_seen_allowed_mv",
		"ALTER TABLE kaccess.audit_events DROP COLUMN refusal_reason",
		ms[1].Statements[1], // version 2's materialized view
		"DELETE FROM kaccess.kaccess_schema_migrations WHERE version = 3",
	} {
		if err := s.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	s.Close()

	s = openTest(t, Config{Dir: dir})
	views, err := s.QueryStrings(ctx, "SELECT name FROM system.tables WHERE database = 'kaccess' AND engine = 'MaterializedView' ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(views, []string{"audit_first_seen_allowed_mv"}) {
		t.Fatalf("materialized views after the upgrade: %v", views)
	}
	evs := storetest.Realistic("gw-upgrade", 1, 2, time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC))
	evs[0].Decision, evs[0].RefusalReason, evs[0].ResponseCode = event.DecisionRefused, "identity_header", 400
	evs[1].Decision, evs[1].RefusalReason = event.DecisionAllow, ""
	if err := s.Write(ctx, "upgrade-batch", evs); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(ctx, "gw-upgrade")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RefusalReason != "identity_header" || got[0].Decision != event.DecisionRefused || got[1].RefusalReason != "" {
		t.Fatalf("read back %+v", got)
	}
	n, err := s.QueryStrings(ctx, "SELECT toString(sum(events)) FROM kaccess.audit_first_seen")
	if err != nil || len(n) != 1 || n[0] != "1" {
		t.Fatalf("rollup events: %v %v, want 1 (the allowed one only)", n, err)
	}
}
