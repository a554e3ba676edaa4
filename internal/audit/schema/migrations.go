package schema

import (
	"fmt"
	"strings"
)

// Migration is one version of the schema: statements that take the schema from the previous
// version to this one. Every statement is idempotent (IF NOT EXISTS, ADD COLUMN IF NOT EXISTS),
// so two gateways starting at once, or a gateway that died halfway, converge on the same schema.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// MigrationsTable records the applied versions, one row per (version, gateway that applied it).
const MigrationsTable = "kaccess_schema_migrations"

// RollupTable holds, per (cluster, user, resource, verb, namespace), when it was first and last
// seen and how often: "everything this user did" over months, and first-seen detections.
const RollupTable = "audit_first_seen"

// Migrations returns the migrations for opts in version order. Append new versions; never change
// a released one (gateways that applied it will not run it again).
func Migrations(opts Options) ([]Migration, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("audit schema options: %w", err)
	}
	return []Migration{
		{Version: 1, Name: "audit_events", Statements: eventsTable(o)},
		{Version: 2, Name: "first_seen_rollup", Statements: rollup(o)},
		{Version: 3, Name: "refusal_reason", Statements: refusalReason(o)},
		{Version: 4, Name: "findings", Statements: findingsTable(o)},
	}, nil
}

// FindingsTable holds the findings of scheduled detections, one row per version of a finding.
const FindingsTable = "findings"

// findingsTable creates the findings table. A finding changes state (firing, acknowledged,
// silenced, resolved) and is re-seen on every run: each change is a new row with a higher
// version, and ReplacingMergeTree keeps the latest per fingerprint, so readers ask with FINAL
// and writers never update in place (no mutations, and two leaders writing the same finding
// during a failover converge on one row). The table is small (findings, not events): no TTL
// or partitions. On a cluster the Distributed table shards by fingerprint, so every version of
// a finding lands on the same shard and FINAL sees them together.
func findingsTable(o Options) []string {
	local := FindingsTable
	engine := "ReplacingMergeTree(version)"
	if o.Cluster != "" {
		local = FindingsTable + "_local"
		engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)"
	}
	stmts := []string{"CREATE TABLE IF NOT EXISTS " + o.table(local) + o.onCluster() + ` (
    fingerprint String,
    detection LowCardinality(String),
    cluster LowCardinality(String),
    subject String,
    scope String,
    severity LowCardinality(String),
    technique_id LowCardinality(String),
    technique_name LowCardinality(String),
    summary String,
    state LowCardinality(String),
    first_seen DateTime64(6, 'UTC'),
    last_seen DateTime64(6, 'UTC'),
    count UInt64,
    event_ids Array(String),
    window_seconds UInt32,
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    resolved_at DateTime64(6, 'UTC'),
    reason String,
    actor String,
    notified_firing UInt8,
    notified_resolved UInt8,
    version UInt64
) ENGINE = ` + engine + `
ORDER BY fingerprint`}
	if o.Cluster != "" {
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+o.table(FindingsTable)+o.onCluster()+
			" AS "+o.table(local)+
			fmt.Sprintf("\nENGINE = Distributed(%s, %s, %s, cityHash64(fingerprint))",
				StringLiteral(o.Cluster), StringLiteral(o.Database), StringLiteral(local)))
	}
	return stmts
}

// refusalReason adds the column that says why the gateway refused a request (tables created
// since already have it), and makes the first-seen rollup count only what the API server
// allowed: "first seen doing it" must mean done, and refused attempts must not seed the
// baseline that hides a later real access. The new view is created before the old one is
// dropped, so no insert in between goes unrolled-up (one may be counted twice in events).
// Rollup rows from before this version may include refused requests.
func refusalReason(o Options) []string {
	source, target := Table, RollupTable
	if o.Cluster != "" {
		source, target = LocalTable, RollupTable+"_local"
	}
	add := "ADD COLUMN IF NOT EXISTS refusal_reason " + lowCard
	stmts := []string{"ALTER TABLE " + o.table(source) + o.onCluster() + " " + add}
	if o.Cluster != "" {
		stmts = append(stmts, "ALTER TABLE "+o.table(Table)+o.onCluster()+" "+add)
	}
	return append(stmts, rollupView(o, target+"_allowed_mv", source, target), "DROP VIEW IF EXISTS "+o.table(target+"_mv")+o.onCluster())
}

// rollupView is the materialized view that feeds the first-seen rollup with allowed events.
func rollupView(o Options, view, source, target string) string {
	return "CREATE MATERIALIZED VIEW IF NOT EXISTS " + o.table(view) + o.onCluster() +
		" TO " + o.table(target) + `
AS SELECT cluster, user, resource, verb, namespace,
    min(time) AS first_seen, max(time) AS last_seen, count() AS events
FROM ` + o.table(source) + `
WHERE decision = 'allow'
GROUP BY cluster, user, resource, verb, namespace`
}

// bootstrap creates the database and the migrations table, before any version is read.
func bootstrap(o Options) []string {
	engine := "MergeTree"
	if o.Cluster != "" {
		// One path for every shard: all nodes run the same ON CLUSTER DDL, so each must see
		// every version recorded, whichever node recorded it.
		engine = fmt.Sprintf("ReplicatedMergeTree('/clickhouse/kaccess/%s/%s', '{shard}-{replica}')", o.Database, MigrationsTable)
	}
	return []string{
		"CREATE DATABASE IF NOT EXISTS " + quote(o.Database) + o.onCluster(),
		"CREATE TABLE IF NOT EXISTS " + o.table(MigrationsTable) + o.onCluster() + ` (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ` + engine + `
ORDER BY version`,
	}
}

// columnsDDL is the column list of audit_events; codecs only where data is stored (not on a
// Distributed table).
func columnsDDL(codecs bool) string {
	var b strings.Builder
	for i, c := range Columns {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, "    %s %s", quote(c.Name), c.Type)
		if codecs && c.Codec != "" {
			fmt.Fprintf(&b, " CODEC(%s)", c.Codec)
		}
	}
	return b.String()
}

// eventsTable creates audit_events.
//
// Sort key (cluster, user, time): the most asked question is "what did this person do" over a
// time range, and a person's rows of one day then sit together, ordered by time. cluster comes
// first because it has a handful of values and almost every query names one; user before time
// because ordering by time first would scatter a user's rows across every granule of the day.
// Daily partitions already prune by time.
//
// "What happened to this object" filters on namespace/resource/name instead, which the main key
// cannot serve: the by_object projection holds the part offsets re-sorted by
// (cluster, namespace, resource, name, time), an index rather than a second copy of the rows,
// so such a query reads only the granules of that object.
//
// event_id and request_id are looked up one value at a time (an alert's event, both halves of
// a long-running request): bloom filters skip the granules that cannot hold them.
func eventsTable(o Options) []string {
	local := Table
	engine := "MergeTree"
	settings := []string{
		// Parts of a day expire together: dropped whole, never rewritten.
		"ttl_only_drop_parts = 1",
		// A retried batch carries the same insert_deduplication_token; a non-replicated table
		// only remembers tokens when this window is set.
		"non_replicated_deduplication_window = 10000",
	}
	if o.Cluster != "" {
		local = LocalTable
		engine = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
		// Replicated tables deduplicate through Keeper with replicated_deduplication_window.
		settings = []string{"ttl_only_drop_parts = 1", "replicated_deduplication_window = 10000"}
	}
	ttl := ""
	if d := o.RetentionDays(); d > 0 {
		ttl = fmt.Sprintf("\nTTL toDate(time) + INTERVAL %d DAY", d)
	}
	stmts := []string{
		"CREATE TABLE IF NOT EXISTS " + o.table(local) + o.onCluster() + " (\n" + columnsDDL(true) + `,
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    PROJECTION by_object (SELECT _part_offset ORDER BY (cluster, namespace, resource, name, time))
) ENGINE = ` + engine + `
PARTITION BY toDate(time)
ORDER BY (cluster, user, time)` + ttl + `
SETTINGS ` + strings.Join(settings, ", "),
	}
	if o.Cluster != "" {
		// The sharding key must be deterministic: a retried batch has to reach the same shards
		// in the same blocks for their deduplication to recognise it (rand() would not).
		// Columns are spelled out rather than copied with AS: the local table's indexes and
		// projection mean nothing to a Distributed table.
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+o.table(Table)+o.onCluster()+
			" (\n"+columnsDDL(false)+"\n)"+
			fmt.Sprintf("\nENGINE = Distributed(%s, %s, %s, cityHash64(event_id))",
				StringLiteral(o.Cluster), StringLiteral(o.Database), StringLiteral(LocalTable)))
	}
	return stmts
}

// rollup creates the first-seen table and the materialized view that feeds it on every insert.
// SimpleAggregateFunction keeps the columns readable with plain min/max/sum.
func rollup(o Options) []string {
	source, target := Table, RollupTable
	engine := "AggregatingMergeTree"
	settings := "non_replicated_deduplication_window = 10000"
	if o.Cluster != "" {
		// Each node rolls up its own shard; a Distributed table reads them all.
		source, target = LocalTable, RollupTable+"_local"
		engine = "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
		settings = "replicated_deduplication_window = 10000"
	}
	stmts := []string{
		"CREATE TABLE IF NOT EXISTS " + o.table(target) + o.onCluster() + ` (
    cluster LowCardinality(String),
    user String,
    resource LowCardinality(String),
    verb LowCardinality(String),
    namespace LowCardinality(String),
    first_seen SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    events SimpleAggregateFunction(sum, UInt64)
) ENGINE = ` + engine + `
ORDER BY (cluster, user, resource, verb, namespace)
SETTINGS ` + settings,
		"CREATE MATERIALIZED VIEW IF NOT EXISTS " + o.table(target+"_mv") + o.onCluster() +
			" TO " + o.table(target) + `
AS SELECT cluster, user, resource, verb, namespace,
    min(time) AS first_seen, max(time) AS last_seen, count() AS events
FROM ` + o.table(source) + `
GROUP BY cluster, user, resource, verb, namespace`,
	}
	if o.Cluster != "" {
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+o.table(RollupTable)+o.onCluster()+
			" AS "+o.table(target)+
			fmt.Sprintf("\nENGINE = Distributed(%s, %s, %s)",
				StringLiteral(o.Cluster), StringLiteral(o.Database), StringLiteral(target)))
	}
	return stmts
}
