// Package clickhouse is the audit store on a ClickHouse server, reached with clickhouse-go/v2
// over the native protocol: batches go in with one INSERT each, carrying the shipper's
// deduplication token where the server knows the setting, so a retried batch is kept once.
//
// The rows are those of internal/audit/schema. On a server new enough for the production
// schema, Open migrates it. An older server (Debian's 18.16) is written to in a table made by
// hand with older column types, a subset of the schema's columns with the same names: the
// writer reads the table's columns at Open and converts each value to what its column holds
// (see converterFor).
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"syscall"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Server versions that change what the writer does.
var (
	// insert_deduplication_token appeared in 22.2; older servers refuse unknown settings.
	minDedupTokenVersion = version{22, 2}
	// Below this the production schema cannot be (DateTime64, Map, TTL and LowCardinality
	// came in 20.x-21.x): such a server is only written to, into a table made for it. Newer
	// parts of the schema's DDL may need a newer server; Migrate's error then names the
	// statement the server refused.
	minMigrateVersion = version{22, 2}
)

// ErrInvalidEvent marks a Write that failed on an event the table cannot hold (e.g. a time
// outside a DateTime column's range). Unlike a server that is down, retrying the same batch
// cannot succeed.
var ErrInvalidEvent = errors.New("event cannot be stored in this table")

// Store writes audit events into one ClickHouse table and reads them back. It implements
// ship.Sink and schema.Execer; it is safe for concurrent use.
type Store struct {
	conn    driver.Conn
	table   string // `database`.`table`
	server  version
	columns []column // the table's insertable columns, in table order
	insert  string   // INSERT INTO table (a, b, ...): 18.16 needs the explicit list
	dedup   bool     // the server knows insert_deduplication_token
}

// column is one column of the table and the schema column it holds.
type column struct {
	name    string
	typ     string
	index   int          // in schema.Columns and schema.Values
	goType  reflect.Type // what schema.Values gives for it, and FromValues wants back
	convert converter
	buffer  func(n int) colBuf // for the converted values of n events
}

// Open connects, checks the server, migrates the schema on servers new enough for it (unless
// cfg.SkipMigrate) and reads the table's columns. The connection pool reconnects by itself
// after an outage, so Open has to succeed only once.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("clickhouse audit store config: %w", err)
	}
	opts, err := cfg.options()
	if err != nil {
		return nil, fmt.Errorf("clickhouse audit store config: %w", err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse audit store: %w", err)
	}
	s := &Store{conn: conn, table: quote(cfg.Database) + "." + quote(cfg.Table)}
	if err := s.init(ctx, cfg); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context, cfg Config) error {
	if err := s.conn.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse audit store: cannot reach a server at %s as user %s: %w (check the addresses, credentials and TLS settings)",
			strings.Join(cfg.Addresses, ", "), cfg.Username, err)
	}
	sv, err := s.conn.ServerVersion()
	if err != nil {
		return fmt.Errorf("clickhouse audit store: read the server version: %w", err)
	}
	s.server = version{sv.Version.Major, sv.Version.Minor}
	s.dedup = !s.server.less(minDedupTokenVersion)
	if !cfg.SkipMigrate && !s.server.less(minMigrateVersion) {
		opts := schema.Options{Database: cfg.Database, Cluster: cfg.Cluster, Retention: cfg.Retention}
		if err := schema.Migrate(ctx, s, opts); err != nil {
			return fmt.Errorf("clickhouse audit store: %w", err)
		}
	}
	if err := s.describe(ctx); err != nil {
		if s.server.less(minMigrateVersion) {
			err = fmt.Errorf("%w (server %s is too old for the production schema: create the table by hand with older column types and set skipMigrate)", err, s.server)
		}
		return err
	}
	return nil
}

// describe reads the table's columns and matches each with its schema column.
func (s *Store) describe(ctx context.Context) error {
	rows, err := s.conn.Query(ctx, "DESCRIBE TABLE "+s.table)
	if err != nil {
		return fmt.Errorf("clickhouse audit store: describe %s: %w", s.table, err)
	}
	defer rows.Close()
	byName := make(map[string]int, len(schema.Columns))
	for i, c := range schema.Columns {
		byName[c.Name] = i
	}
	zero := schema.Values(&event.Event{})
	sample := schema.Values(sampleEvent)
	var problems []error
	names := make([]string, 0, len(schema.Columns))
	for rows.Next() {
		// DESCRIBE returns name, type, default_type, default_expression and, on newer
		// servers, more (all strings); only the first three matter here.
		vals := make([]any, len(rows.Columns()))
		for i := range vals {
			vals[i] = new(string)
		}
		if err := rows.Scan(vals...); err != nil {
			return fmt.Errorf("clickhouse audit store: describe %s: %w", s.table, err)
		}
		name, typ, defaultType := *vals[0].(*string), *vals[1].(*string), *vals[2].(*string)
		if defaultType == "MATERIALIZED" || defaultType == "ALIAS" || defaultType == "EPHEMERAL" {
			continue // computed by the server; an INSERT cannot name it
		}
		i, ok := byName[name]
		if !ok {
			problems = append(problems, fmt.Errorf("column %s: not in the audit schema, so no event field fills it", name))
			continue
		}
		conv, err := converterFor(typ, schema.Columns[i].Type)
		if err != nil {
			problems = append(problems, fmt.Errorf("column %s: %w", name, err))
			continue
		}
		buffer, err := bufferFor(conv, sample[i])
		if err != nil {
			problems = append(problems, fmt.Errorf("column %s %s: %w", name, typ, err))
			continue
		}
		s.columns = append(s.columns, column{
			name: name, typ: typ, index: i, goType: reflect.TypeOf(zero[i]), convert: conv, buffer: buffer,
		})
		names = append(names, quote(name))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse audit store: describe %s: %w", s.table, err)
	}
	for _, need := range []string{"gateway_instance", "seq"} { // Events reads by them
		if _, ok := byName[need]; ok && !slices.Contains(names, quote(need)) {
			problems = append(problems, fmt.Errorf("column %s is missing: events could not be read back", need))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("clickhouse audit store: table %s does not fit the audit writer: %w", s.table, errors.Join(problems...))
	}
	s.insert = "INSERT INTO " + s.table + " (" + strings.Join(names, ", ") + ")"
	return nil
}

// Write inserts events as one batch. With a server that knows insert_deduplication_token,
// token makes a retried batch (same token, same events) go in once. Older servers have no
// such setting: there a retry after an error in Send may store a batch twice.
func (s *Store) Write(ctx context.Context, token string, events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	if s.dedup && token != "" {
		ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_deduplication_token": token}))
	}
	batch, err := s.conn.PrepareBatch(ctx, s.insert, driver.WithReleaseConnection())
	if err != nil {
		return fmt.Errorf("clickhouse audit store: start insert into %s: %w%s", s.table, err, hint(err))
	}
	defer func() { _ = batch.Abort() }()
	bufs := make([]colBuf, len(s.columns))
	for j, c := range s.columns {
		bufs[j] = c.buffer(len(events))
	}
	for i, e := range events {
		vals := schema.Values(e)
		for j, c := range s.columns {
			v, err := c.convert(vals[c.index])
			if err == nil {
				err = bufs[j].add(v)
			}
			if err != nil {
				return fmt.Errorf("clickhouse audit store: event %s (batch index %d), column %s %s: %w: %w", e.EventID, i, c.name, c.typ, ErrInvalidEvent, err)
			}
		}
	}
	for j, c := range s.columns {
		if err := batch.Column(j).Append(bufs[j].values()); err != nil {
			return fmt.Errorf("clickhouse audit store: column %s %s: %w: %w", c.name, c.typ, ErrInvalidEvent, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("clickhouse audit store: insert %d events into %s: %w%s", len(events), s.table, err, hint(err))
	}
	return nil
}

// hint says what a network error means for the person reading the log.
func hint(err error) string {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return " (the ClickHouse server is down, unreachable or not answering; the batch was not acknowledged and may be retried)"
	}
	return ""
}

// Close closes the connections.
func (s *Store) Close() error { return s.conn.Close() }

// ServerVersion returns the server's major.minor version, e.g. "18.16".
func (s *Store) ServerVersion() string { return s.server.String() }

// DedupToken reports whether Write passes the batch token to the server.
func (s *Store) DedupToken() bool { return s.dedup }

// quote returns name as a ClickHouse identifier in backquotes.
func quote(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

type version struct{ major, minor uint64 }

func (v version) less(o version) bool {
	return v.major < o.major || v.major == o.major && v.minor < o.minor
}

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }
