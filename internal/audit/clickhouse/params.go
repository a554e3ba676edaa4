package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// QueryJSON runs a read-only SELECT whose {name:Type} placeholders are bound to params and calls
// each with every result row, one JSON object per row, as the embedded store's QueryJSON gives
// them (JSONEachRow): columns in select order, DateTime64 as "2006-01-02 15:04:05.000000" UTC
// text, 64-bit integers quoted, arrays and maps as JSON.
//
// The values travel as native-protocol query parameters (clickhouse.WithParameters), never in
// the statement. Rows are scanned and marshalled here because FORMAT JSONEachRow is not
// available over the native protocol. A server older than the protocol revision that carries
// parameters (ClickHouse 22.x) gets an error that says so instead of a query.
func (s *Store) QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error {
	sv, err := s.conn.ServerVersion()
	if err != nil {
		return fmt.Errorf("clickhouse audit store: %w", err)
	}
	if sv.Revision < proto.DBMS_MIN_PROTOCOL_VERSION_WITH_PARAMETERS {
		return fmt.Errorf("clickhouse audit store: server %s (protocol revision %d) cannot take query parameters, "+
			"which searches need (revision %d, ClickHouse 22.x or later): upgrade the server or use the embedded store",
			s.server, sv.Revision, proto.DBMS_MIN_PROTOCOL_VERSION_WITH_PARAMETERS)
	}
	ctx = ch.Context(ctx, ch.WithParameters(ch.Parameters(params)))
	rows, err := s.conn.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("clickhouse audit store: query: %w", err)
	}
	defer rows.Close()
	names := rows.Columns()
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for rows.Next() {
		for i, t := range types {
			dest[i] = reflect.New(t.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("clickhouse audit store: read a row: %w", err)
		}
		row, err := jsonRow(names, dest)
		if err != nil {
			return err
		}
		if err := each(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse audit store: query: %w", err)
	}
	return nil
}

// jsonRow marshals scanned values (pointers) as one JSON object, keeping the column order.
func jsonRow(names []string, dest []any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(name)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(jsonValue(reflect.ValueOf(dest[i]).Elem().Interface()))
		if err != nil {
			return nil, fmt.Errorf("clickhouse audit store: column %s as JSON: %w", name, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// jsonValue converts a scanned value to what JSONEachRow would print for it.
func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05.000000")
	case *time.Time:
		if x == nil {
			return nil
		}
		return jsonValue(*x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case *big.Int:
		if x == nil {
			return nil
		}
		return x.String()
	case []byte:
		return string(x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return nil
		}
		return jsonValue(rv.Elem().Interface())
	case reflect.Slice:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonValue(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out[fmt.Sprint(it.Key().Interface())] = jsonValue(it.Value().Interface())
		}
		return out
	}
	return v
}
