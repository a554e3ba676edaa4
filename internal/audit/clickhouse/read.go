package clickhouse

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Events returns the stored events of one gateway instance, ordered by Seq: what the
// conformance suite and the zero-loss checks compare with what went in. Fields the table has
// no column for stay empty; times come back at the column's precision (whole seconds in a
// DateTime column).
func (s *Store) Events(ctx context.Context, gateway string) ([]*event.Event, error) {
	names := make([]string, len(s.columns))
	for i, c := range s.columns {
		names[i] = quote(c.name)
	}
	q := "SELECT " + strings.Join(names, ", ") + " FROM " + s.table +
		" WHERE `gateway_instance` = ? ORDER BY `seq`"
	rows, err := s.conn.Query(ctx, q, gateway)
	if err != nil {
		return nil, fmt.Errorf("clickhouse audit store: read events of gateway %s: %w", gateway, err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	zero := schema.Values(&event.Event{}) // the values of the columns the table lacks
	var out []*event.Event
	for rows.Next() {
		dest := make([]any, len(types))
		for i, t := range types {
			dest[i] = reflect.New(t.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("clickhouse audit store: read events of gateway %s: %w", gateway, err)
		}
		vals := append([]any(nil), zero...)
		for i, c := range s.columns {
			v, err := readBack(reflect.ValueOf(dest[i]).Elem().Interface(), c.goType)
			if err != nil {
				return nil, fmt.Errorf("clickhouse audit store: read column %s: %w", c.name, err)
			}
			vals[c.index] = v
		}
		e, err := schema.FromValues(vals)
		if err != nil {
			return nil, fmt.Errorf("clickhouse audit store: read events of gateway %s: %w", gateway, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse audit store: read events of gateway %s: %w", gateway, err)
	}
	return out, nil
}

// Exec runs a statement that returns no rows (schema.Execer).
func (s *Store) Exec(ctx context.Context, sql string) error {
	return s.conn.Exec(ctx, sql)
}

// QueryStrings runs a query whose result is one String column and returns its values
// (schema.Execer).
func (s *Store) QueryStrings(ctx context.Context, sql string) ([]string, error) {
	rows, err := s.conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// StoredSeqs returns the sequence numbers in [first, last] stored for a gateway instance
// (ship.SeqLister). The shipper sends only the missing records of a batch that may have gone
// in before a crash or a failed insert: exactly-once delivery also on servers that know no
// insert_deduplication_token.
func (s *Store) StoredSeqs(ctx context.Context, gateway string, first, last uint64) ([]uint64, error) {
	q := "SELECT DISTINCT `seq` FROM " + s.table + " WHERE `gateway_instance` = ? AND `seq` BETWEEN ? AND ?"
	rows, err := s.conn.Query(ctx, q, gateway, first, last)
	if err != nil {
		return nil, fmt.Errorf("clickhouse audit store: stored sequence numbers of gateway %s: %w", gateway, err)
	}
	defer rows.Close()
	var seqs []uint64
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return nil, fmt.Errorf("clickhouse audit store: stored sequence numbers: %w", err)
		}
		seqs = append(seqs, seq)
	}
	return seqs, rows.Err()
}
