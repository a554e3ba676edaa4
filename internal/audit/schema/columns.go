// Package schema is the ClickHouse schema of the audit store: the columns of audit_events with
// the value each takes from an event, and the versioned, idempotent migrations that create the
// tables (single node or clustered). Both stores, the embedded chDB one and the ClickHouse server
// one, use it, so they hold the same rows and answer the same SQL.
package schema

import (
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Table is the table writers insert into and readers query. In the clustered variant it is the
// Distributed table in front of LocalTable.
const Table = "audit_events"

// LocalTable is the ReplicatedMergeTree each node of a cluster holds (clustered variant only).
const LocalTable = "audit_events_local"

// Column is one column of audit_events.
type Column struct {
	Name  string
	Type  string // ClickHouse type, e.g. "LowCardinality(String)"
	Codec string // compression codec, e.g. "ZSTD(1)"; empty for the default (LZ4)
	value func(e *event.Event) any
}

// Columns are the columns of audit_events in table order: one per event.Event field. Values
// and ColumnNames follow this order.
//
// LowCardinality is used where a column has at most a few thousand distinct values (verbs,
// resources, namespaces, user agents); ids, names and URIs stay plain String, where a dictionary
// would cost more than it saves. Nothing is Nullable: an empty value means "not applicable".
var Columns = []Column{
	// Delta turns microsecond times, mostly rising within a sort run, into small numbers
	// ZSTD packs well.
	{"time", "DateTime64(6, 'UTC')", "Delta(8), ZSTD(1)", func(e *event.Event) any { return e.Time.UTC() }},
	// Kept as text, not UUID: the id is whatever the event carries and must come back unchanged.
	{"event_id", "String", "", func(e *event.Event) any { return e.EventID }},
	{"kind", lowCard, "", func(e *event.Event) any { return string(e.Kind) }},
	{"stage", lowCard, "", func(e *event.Event) any { return string(e.Stage) }},
	{"cluster", lowCard, "", func(e *event.Event) any { return e.Cluster }},
	{"gateway_instance", lowCard, "", func(e *event.Event) any { return e.GatewayInstance }},
	{"seq", "UInt64", "Delta(8), ZSTD(1)", func(e *event.Event) any { return e.Seq }},
	{"request_id", "String", "", func(e *event.Event) any { return e.RequestID }},
	{"user", "String", "", func(e *event.Event) any { return e.User }},
	{"uid", "String", "", func(e *event.Event) any { return e.UID }},
	{"groups", "Array(LowCardinality(String))", "", func(e *event.Event) any { return strs(e.Groups) }},
	{"source", lowCard, "", func(e *event.Event) any { return e.Source }},
	{"session_id_hash", "String", "", func(e *event.Event) any { return e.SessionIDHash }},
	{"impersonated_user", "String", "", func(e *event.Event) any { return e.ImpersonatedUser }},
	{"impersonated_groups", "Array(LowCardinality(String))", "", func(e *event.Event) any { return strs(e.ImpersonatedGroups) }},
	{"grant_ids", "Array(String)", "", func(e *event.Event) any { return strs(e.GrantIDs) }},
	{"source_ip", "String", "", func(e *event.Event) any { return e.SourceIP }},
	{"user_agent", lowCard, "", func(e *event.Event) any { return e.UserAgent }},
	{"verb", lowCard, "", func(e *event.Event) any { return e.Verb }},
	{"api_group", lowCard, "", func(e *event.Event) any { return e.APIGroup }},
	{"api_version", lowCard, "", func(e *event.Event) any { return e.APIVersion }},
	{"resource", lowCard, "", func(e *event.Event) any { return e.Resource }},
	{"subresource", lowCard, "", func(e *event.Event) any { return e.Subresource }},
	{"namespace", lowCard, "", func(e *event.Event) any { return e.Namespace }},
	{"name", "String", "", func(e *event.Event) any { return e.Name }},
	{"request_uri", "String", "ZSTD(1)", func(e *event.Event) any { return e.RequestURI }},
	{"method", lowCard, "", func(e *event.Event) any { return e.Method }},
	{"response_code", "UInt16", "", func(e *event.Event) any { return uint16(e.ResponseCode) }},
	{"decision", lowCard, "", func(e *event.Event) any { return string(e.Decision) }},
	// Nanoseconds, so a time.Duration comes back exactly; T64 drops the unused high bits.
	{"latency_ns", "Int64", "T64, ZSTD(1)", func(e *event.Event) any { return int64(e.Latency) }},
	{"duration_ns", "Int64", "T64, ZSTD(1)", func(e *event.Event) any { return int64(e.Duration) }},
	{"bytes_in", "Int64", "T64, ZSTD(1)", func(e *event.Event) any { return e.BytesIn }},
	{"bytes_out", "Int64", "T64, ZSTD(1)", func(e *event.Event) any { return e.BytesOut }},
	{"level", lowCard, "", func(e *event.Event) any { return string(e.Level) }},
	// Bodies are JSON, large and repetitive: a stronger ZSTD level pays here.
	{"request_body", "String", "ZSTD(3)", func(e *event.Event) any { return string(e.RequestBody) }},
	{"response_body", "String", "ZSTD(3)", func(e *event.Event) any { return string(e.ResponseBody) }},
	{"extra", "Map(LowCardinality(String), String)", "ZSTD(1)", func(e *event.Event) any { return strMap(e.Extra) }},
	// Added in version 3, so last: tables made before have it appended by ALTER TABLE, and the
	// embedded store's RowBinary inserts follow the table's column order.
	{"refusal_reason", lowCard, "", func(e *event.Event) any { return e.RefusalReason }},
}

const lowCard = "LowCardinality(String)"

// ColumnNames returns the names of Columns, in order (for an INSERT column list).
func ColumnNames() []string {
	names := make([]string, len(Columns))
	for i, c := range Columns {
		names[i] = c.Name
	}
	return names
}

// Values returns e's values in Columns order, as Go types clickhouse-go/v2 accepts for the
// column types: time.Time, string, uint64, uint16, int64, []string, map[string]string.
func Values(e *event.Event) []any {
	vals := make([]any, len(Columns))
	for i, c := range Columns {
		vals[i] = c.value(e)
	}
	return vals
}

// strs never returns nil: an Array column has no NULL, and clickhouse-go wants a slice.
func strs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func strMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Precision is the resolution of the time column: times are stored truncated to it.
const Precision = time.Microsecond
