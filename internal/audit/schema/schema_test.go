package schema

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// filled returns an event with every field set to a non-zero value, found by reflection so a
// field added to event.Event later is covered without touching this test.
func filled(t *testing.T) *event.Event {
	t.Helper()
	e := &event.Event{}
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Date(2026, 11, 25, 14, 3, 4, 123456000, time.UTC)))
		case f.Type() == reflect.TypeFor[json.RawMessage]():
			f.Set(reflect.ValueOf(json.RawMessage(`{"field":"` + name + `"}`)))
		case f.Kind() == reflect.String:
			f.SetString("v-" + name)
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			f.SetInt(int64(200 + i))
		case f.Kind() == reflect.Uint64:
			f.SetUint(uint64(1000 + i))
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			f.Set(reflect.ValueOf([]string{name + "-a", name + "-b"}))
		case f.Kind() == reflect.Map:
			f.Set(reflect.ValueOf(map[string]string{"k-" + name: "v"}))
		default:
			t.Fatalf("event field %s has type %s the test cannot fill: extend filled()", name, f.Type())
		}
	}
	return e
}

func TestColumnsCoverEveryEventField(t *testing.T) {
	t.Parallel()
	fields := reflect.TypeFor[event.Event]().NumField()
	if len(Columns) != fields {
		t.Fatalf("%d columns for %d event fields: a field was added without a column (or the reverse)", len(Columns), fields)
	}
	seen := map[string]bool{}
	for _, c := range Columns {
		if seen[c.Name] {
			t.Errorf("column %s listed twice", c.Name)
		}
		seen[c.Name] = true
		if strings.Contains(c.Type, "Nullable") {
			t.Errorf("column %s is Nullable: the store uses empty values instead", c.Name)
		}
	}
	if got := ColumnNames(); len(got) != len(Columns) || got[0] != "time" {
		t.Errorf("ColumnNames() = %v", got)
	}
}

func TestValuesRoundTrip(t *testing.T) {
	t.Parallel()
	in := filled(t)
	vals := Values(in)
	if len(vals) != len(Columns) {
		t.Fatalf("Values gave %d values for %d columns", len(vals), len(Columns))
	}
	out, err := FromValues(vals)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the event:\n in: %+v\nout: %+v", in, out)
	}
}

func TestValuesOfEmptyEvent(t *testing.T) {
	t.Parallel()
	in := &event.Event{Time: time.Unix(0, 0).UTC()}
	vals := Values(in)
	for i, c := range Columns {
		if vals[i] == nil || (reflect.ValueOf(vals[i]).Kind() == reflect.Slice && reflect.ValueOf(vals[i]).IsNil()) ||
			(reflect.ValueOf(vals[i]).Kind() == reflect.Map && reflect.ValueOf(vals[i]).IsNil()) {
			t.Errorf("column %s: nil value; the store has no NULL", c.Name)
		}
	}
	out, err := FromValues(vals)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("empty event changed:\n in: %+v\nout: %+v", in, out)
	}
}

func TestFromValuesRejectsWrongTypes(t *testing.T) {
	t.Parallel()
	vals := Values(filled(t))
	vals[6] = "not a uint64"
	if _, err := FromValues(vals); err == nil || !strings.Contains(err.Error(), "column seq") {
		t.Errorf("FromValues with a string seq: err = %v, want one naming column seq", err)
	}
	if _, err := FromValues(vals[:3]); err == nil {
		t.Error("FromValues with 3 values: no error")
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    Options
		wantErr []string
		days    int
	}{
		{name: "defaults", opts: Options{}},
		{name: "retention rounds up to days", opts: Options{Retention: 25 * time.Hour}, days: 2},
		{name: "whole days", opts: Options{Retention: 90 * 24 * time.Hour}, days: 90},
		{name: "cluster with dash", opts: Options{Cluster: "audit-cluster.prod"}},
		{name: "every problem at once", opts: Options{Database: "a;drop", Cluster: "x y", Retention: -time.Hour},
			wantErr: []string{`database "a;drop"`, `cluster "x y"`, "retention -1h0m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := tt.opts.withDefaults()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if o.Database != DefaultDatabase && tt.opts.Database == "" {
					t.Errorf("database default = %q", o.Database)
				}
				if got := o.RetentionDays(); got != tt.days {
					t.Errorf("RetentionDays() = %d, want %d", got, tt.days)
				}
				return
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not mention %s", err, w)
				}
			}
		})
	}
}

func TestMigrationsAreIdempotentStatements(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {Cluster: "c1", Retention: 30 * 24 * time.Hour}} {
		ms, err := Migrations(opts)
		if err != nil {
			t.Fatal(err)
		}
		stmts := bootstrap(mustDefaults(t, opts))
		for i, m := range ms {
			if m.Version != i+1 {
				t.Errorf("migration %s has version %d, want %d: versions rise by one", m.Name, m.Version, i+1)
			}
			stmts = append(stmts, m.Statements...)
		}
		for _, s := range stmts {
			if !strings.Contains(s, "IF NOT EXISTS") && !strings.HasPrefix(s, "DROP VIEW IF EXISTS") {
				t.Errorf("statement is not idempotent (no IF NOT EXISTS, nor a DROP ... IF EXISTS):\n%s", s)
			}
			if opts.Cluster != "" && !strings.Contains(s, "ON CLUSTER `c1`") {
				t.Errorf("clustered statement without ON CLUSTER:\n%s", s)
			}
			if opts.Cluster == "" && strings.Contains(s, "Replicated") {
				t.Errorf("single-node statement uses a replicated engine:\n%s", s)
			}
		}
	}
}

func mustDefaults(t *testing.T, o Options) Options {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// fakeDB records statements and answers the two queries Migrate asks.
type fakeDB struct {
	stmts    []string
	versions []string
	engine   string
}

func (f *fakeDB) Exec(_ context.Context, sql string) error {
	f.stmts = append(f.stmts, sql)
	if strings.HasPrefix(sql, "INSERT INTO") {
		f.versions = append(f.versions, strings.Fields(strings.SplitAfter(sql, "VALUES (")[1])[0][:1])
	}
	return nil
}

func (f *fakeDB) QueryStrings(_ context.Context, sql string) ([]string, error) {
	if strings.Contains(sql, "system.tables") {
		return []string{f.engine}, nil
	}
	return f.versions, nil
}

func TestMigrateRunsOnlyWhatIsMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := &fakeDB{engine: "MergeTree PARTITION BY toDate(time) ORDER BY (cluster, user, time) SETTINGS index_granularity = 8192"}
	if err := Migrate(ctx, db, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := len(db.versions); got != 4 {
		t.Fatalf("first run recorded %d versions, want 4", got)
	}
	db.stmts = nil
	if err := Migrate(ctx, db, Options{}); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(db.stmts, func(s string) bool { return strings.HasPrefix(s, "INSERT") || strings.Contains(s, "audit_events (") }) {
		t.Errorf("second run re-applied migrations: %q", db.stmts)
	}

	db.stmts = nil
	if err := Migrate(ctx, db, Options{Retention: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if last := db.stmts[len(db.stmts)-1]; !strings.Contains(last, "MODIFY TTL toDate(time) + INTERVAL 7 DAY") {
		t.Errorf("a new retention did not change the TTL; last statement: %s", last)
	}
	db.stmts, db.engine = nil, "MergeTree ... TTL toDate(time) + toIntervalDay(7) SETTINGS ttl_only_drop_parts = 1"
	if err := Migrate(ctx, db, Options{Retention: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(db.stmts, func(s string) bool { return strings.HasPrefix(s, "ALTER") }) {
		t.Errorf("an unchanged retention altered the table: %q", db.stmts)
	}
}

func TestStringLiteral(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "''"},
		{"plain", "'plain'"},
		{`it's a \ test`, `'it\'s a \\ test'`},
		{"nul\x00nl\n\x7f", `'nul\x00nl\x0A\x7F'`},
		{"ünïcode ✓", "'ünïcode ✓'"},
	}
	for _, tt := range tests {
		if got := StringLiteral(tt.in); got != tt.want {
			t.Errorf("StringLiteral(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
