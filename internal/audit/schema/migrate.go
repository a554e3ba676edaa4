package schema

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Execer runs SQL on the audit store. Both the chDB store and the ClickHouse server store
// implement it, so one Migrate serves both.
type Execer interface {
	// Exec runs a statement that returns no rows.
	Exec(ctx context.Context, sql string) error
	// QueryStrings runs a query whose result is one String column and returns its values.
	QueryStrings(ctx context.Context, sql string) ([]string, error)
}

// Migrate brings the schema to the latest version: it creates the database and the migrations
// table, runs every migration not yet recorded, records it, and applies opts.Retention to
// audit_events. Safe to run from several gateways at once: statements are idempotent, and a
// version recorded twice is harmless.
func Migrate(ctx context.Context, x Execer, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return fmt.Errorf("audit schema options: %w", err)
	}
	for _, stmt := range bootstrap(o) {
		if err := x.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create the audit migrations table: %w", err)
		}
	}
	applied, err := AppliedVersions(ctx, x, o)
	if err != nil {
		return err
	}
	migrations, err := Migrations(o)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if slices.Contains(applied, m.Version) {
			continue
		}
		for i, stmt := range m.Statements {
			if err := x.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("audit schema migration %d (%s), statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		rec := fmt.Sprintf("INSERT INTO %s (version, name) VALUES (%d, %s)",
			o.table(MigrationsTable), m.Version, StringLiteral(m.Name))
		if err := x.Exec(ctx, rec); err != nil {
			return fmt.Errorf("record audit schema migration %d: %w", m.Version, err)
		}
	}
	return ensureRetention(ctx, x, o)
}

// AppliedVersions returns the versions recorded in the migrations table, ascending.
func AppliedVersions(ctx context.Context, x Execer, opts Options) ([]int, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("audit schema options: %w", err)
	}
	rows, err := x.QueryStrings(ctx, "SELECT DISTINCT toString(version) FROM "+o.table(MigrationsTable))
	if err != nil {
		return nil, fmt.Errorf("read applied audit schema versions: %w", err)
	}
	versions := make([]int, 0, len(rows))
	for _, r := range rows {
		v, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("migrations table holds version %q, not a number: %w", r, err)
		}
		versions = append(versions, v)
	}
	slices.Sort(versions)
	return versions, nil
}

// ensureRetention changes the TTL of the events table when opts.Retention differs from the one
// it was created (or last changed) with. The TTL is not part of a migration because it is
// configuration: an operator may change it at any start.
func ensureRetention(ctx context.Context, x Execer, o Options) error {
	local := Table
	if o.Cluster != "" {
		local = LocalTable
	}
	rows, err := x.QueryStrings(ctx, fmt.Sprintf(
		"SELECT engine_full FROM system.tables WHERE database = %s AND name = %s",
		StringLiteral(o.Database), StringLiteral(local)))
	if err != nil {
		return fmt.Errorf("read the audit table's TTL: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("audit table %s.%s is missing after migration", o.Database, local)
	}
	days := o.RetentionDays()
	stmt := ""
	switch has := strings.Contains(rows[0], " TTL "); {
	case days == 0 && has:
		stmt = "ALTER TABLE " + o.table(local) + o.onCluster() + " REMOVE TTL"
	case days > 0 && !strings.Contains(rows[0], fmt.Sprintf("toIntervalDay(%d)", days)):
		// Not materialized now: parts past the new TTL go at their next merge, and with
		// ttl_only_drop_parts a whole day's part is dropped, never rewritten.
		stmt = fmt.Sprintf("ALTER TABLE %s%s MODIFY TTL toDate(time) + INTERVAL %d DAY SETTINGS materialize_ttl_after_modify = 0",
			o.table(local), o.onCluster(), days)
	}
	if stmt == "" {
		return nil
	}
	if err := x.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("set audit retention to %d days: %w", days, err)
	}
	return nil
}
