// Package chdb is the embedded audit store: ClickHouse's engine (chDB) in a helper process,
// kaccess-chdb, that the gateway starts and talks to over a pipe. The gateway itself never
// links chdb-go (its init panics without libchdb.so), so a gateway configured for a ClickHouse
// server starts without the library, and one configured for chDB says what to install.
package chdb
