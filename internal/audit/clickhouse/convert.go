package clickhouse

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// converter turns one value of schema.Values into what a column of the target table accepts
// in clickhouse-go's Append.
type converter func(v any) (any, error)

// same is the converter for a column whose type is the production one: no work per value.
func same(v any) (any, error) { return v, nil }

// converterFor returns the converter for a table column of type typ (as DESCRIBE TABLE spells
// it) that holds the schema column of type want. Where they differ, an older type stands in
// for the production one, so the writer can fill a table an old server accepts (18.16 has no
// DateTime64, no Map and LowCardinality only as an experiment): DateTime for DateTime64 (whole
// seconds), String for LowCardinality(String), and a String holding JSON for a Map.
func converterFor(typ, want string) (converter, error) {
	if typ == want {
		return same, nil
	}
	t := unwrap(typ, "LowCardinality")
	switch {
	case t == "String" || strings.HasPrefix(t, "FixedString(") ||
		strings.HasPrefix(t, "Enum8(") || strings.HasPrefix(t, "Enum16("):
		return toString, nil
	case t == "DateTime" || strings.HasPrefix(t, "DateTime("):
		return toDateTime, nil
	case strings.HasPrefix(t, "DateTime64("):
		return toTime, nil
	case strings.HasPrefix(t, "Array("):
		if unwrap(unwrap(t, "Array"), "LowCardinality") == "String" {
			return toStrings, nil
		}
	case strings.HasPrefix(t, "Map("):
		return same, nil // Map(String, String) and Map(LowCardinality(String), String) alike
	default:
		if c, ok := numeric[t]; ok {
			return c, nil
		}
	}
	return nil, fmt.Errorf("type %s cannot hold the schema's %s", typ, want)
}

// unwrap returns the inside of wrapper(...) around t, or t itself.
func unwrap(t, wrapper string) string {
	if strings.HasPrefix(t, wrapper+"(") && strings.HasSuffix(t, ")") {
		return t[len(wrapper)+1 : len(t)-1]
	}
	return t
}

// toString keeps strings, writes numbers in decimal and slices and maps as JSON (empty ones as
// "", which reads back as none).
func toString(v any) (any, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), nil
	case map[string]string, []string:
		if reflect.ValueOf(v).Len() == 0 {
			return "", nil
		}
		b, err := json.Marshal(v)
		return string(b), err
	}
	if i, err := asInt64(v); err == nil {
		return strconv.FormatInt(i, 10), nil
	}
	if u, err := asUint64(v); err == nil {
		return strconv.FormatUint(u, 10), nil
	}
	return nil, fmt.Errorf("cannot store %T in a String column", v)
}

func toTime(v any) (any, error) {
	if t, ok := v.(time.Time); ok {
		return t.UTC(), nil
	}
	return nil, fmt.Errorf("cannot store %T in a DateTime column", v)
}

// DateTime holds seconds since 1970 in 32 unsigned bits; outside that the server would wrap
// the time around silently, so such an event is refused instead.
var minDateTime, maxDateTime = time.Unix(0, 0), time.Unix(math.MaxUint32, 0)

func toDateTime(v any) (any, error) {
	t, ok := v.(time.Time)
	if !ok {
		return nil, fmt.Errorf("cannot store %T in a DateTime column", v)
	}
	if t.Before(minDateTime) || t.After(maxDateTime) {
		return nil, fmt.Errorf("time %s is outside the DateTime range (1970 to 2106): use DateTime64", t.UTC().Format(time.RFC3339))
	}
	return t.UTC(), nil
}

func toStrings(v any) (any, error) {
	if s, ok := v.([]string); ok {
		return s, nil
	}
	return nil, fmt.Errorf("cannot store %T in an Array(String) column", v)
}

// numeric holds a converter per number type: clickhouse-go wants the exact Go type of the
// column (uint16 for UInt16), and a value out of the column's range is an error, never wrapped.
var numeric = map[string]converter{
	"Int8":    signed(math.MinInt8, math.MaxInt8, func(i int64) any { return int8(i) }),
	"Int16":   signed(math.MinInt16, math.MaxInt16, func(i int64) any { return int16(i) }),
	"Int32":   signed(math.MinInt32, math.MaxInt32, func(i int64) any { return int32(i) }),
	"Int64":   signed(math.MinInt64, math.MaxInt64, func(i int64) any { return i }),
	"UInt8":   unsigned(math.MaxUint8, func(u uint64) any { return uint8(u) }),
	"UInt16":  unsigned(math.MaxUint16, func(u uint64) any { return uint16(u) }),
	"UInt32":  unsigned(math.MaxUint32, func(u uint64) any { return uint32(u) }),
	"UInt64":  unsigned(math.MaxUint64, func(u uint64) any { return u }),
	"Float64": func(v any) (any, error) { i, err := asInt64(v); return float64(i), err },
}

func signed(lo, hi int64, to func(int64) any) converter {
	return func(v any) (any, error) {
		i, err := asInt64(v)
		if err != nil {
			return nil, err
		}
		if i < lo || i > hi {
			return nil, fmt.Errorf("%d is out of the column's range [%d, %d]", i, lo, hi)
		}
		return to(i), nil
	}
}

func unsigned(hi uint64, to func(uint64) any) converter {
	return func(v any) (any, error) {
		u, err := asUint64(v)
		if err != nil {
			return nil, err
		}
		if u > hi {
			return nil, fmt.Errorf("%d is out of the column's range [0, %d]", u, hi)
		}
		return to(u), nil
	}
}

// asInt64 reads any Go integer as int64.
func asInt64(v any) (int64, error) {
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return r.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if r.Uint() > math.MaxInt64 {
			return 0, fmt.Errorf("%d is out of the column's range", r.Uint())
		}
		return int64(r.Uint()), nil
	}
	return 0, fmt.Errorf("cannot store %T in a number column", v)
}

// asUint64 reads any non-negative Go integer as uint64.
func asUint64(v any) (uint64, error) {
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return r.Uint(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if r.Int() < 0 {
			return 0, fmt.Errorf("%d is negative: the column is unsigned", r.Int())
		}
		return uint64(r.Int()), nil
	}
	return 0, fmt.Errorf("cannot store %T in a number column", v)
}

// readBack turns a scanned value into the Go type want (the type schema.Values gives that
// column), undoing what the converters did: JSON in a String back to a slice or map, a
// DateTime back to time.Time in UTC, integers to the schema's width.
func readBack(v any, want reflect.Type) (any, error) {
	if reflect.TypeOf(v) == want {
		if t, ok := v.(time.Time); ok {
			return t.UTC(), nil
		}
		return v, nil
	}
	switch want.Kind() {
	case reflect.Slice, reflect.Map:
		if s, ok := v.(string); ok {
			out := reflect.New(want)
			if s != "" {
				if err := json.Unmarshal([]byte(s), out.Interface()); err != nil {
					return nil, fmt.Errorf("read %s from the JSON a String holds: %w", want, err)
				}
			}
			return out.Elem().Interface(), nil // nil when empty: "not applicable" to the model
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if i, err := asInt64(v); err == nil {
			return reflect.ValueOf(i).Convert(want).Interface(), nil
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u, err := asUint64(v); err == nil {
			return reflect.ValueOf(u).Convert(want).Interface(), nil
		}
	case reflect.String:
		if s, ok := v.(fmt.Stringer); ok {
			return s.String(), nil
		}
	}
	return nil, fmt.Errorf("cannot read %T as %s", v, want)
}
