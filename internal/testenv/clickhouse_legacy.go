package testenv

// LegacyAuditTableDDL is the audit table as ClickHouse 18.16 accepts it (format it with the
// table name): the production columns with older types (DateTime for DateTime64, String for
// LowCardinality(String), JSON in a String for the Map), for tests of the native writer against
// Debian's 18.16 server. The production DDL is proved on chDB and on a modern server (make
// test-clickhouse).
const LegacyAuditTableDDL = `CREATE TABLE %s (
	time DateTime, event_id String, kind String, stage String,
	cluster String, gateway_instance String, seq UInt64, request_id String,
	user String, uid String, groups Array(String), source String, session_id_hash String,
	impersonated_user String, impersonated_groups Array(String), grant_ids Array(String),
	source_ip String, user_agent String,
	verb String, api_group String, api_version String, resource String, subresource String,
	namespace String, name String, request_uri String, method String,
	response_code UInt16, decision String, latency_ns Int64, duration_ns Int64,
	bytes_in Int64, bytes_out Int64, level String,
	request_body String, response_body String, extra String
) ENGINE = MergeTree() PARTITION BY toYYYYMMDD(time) ORDER BY (cluster, gateway_instance, seq)`
