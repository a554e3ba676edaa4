package clickhouse

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConverterFor(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 14, 1, 2, 345678000, time.FixedZone("CET", 3600))
	cases := []struct {
		name      string
		typ, want string // table column type, schema column type
		in        any
		out       any
		err       string
	}{
		{"same type passes through", "UInt16", "UInt16", uint16(403), uint16(403), ""},
		{"LowCardinality as String", "String", "LowCardinality(String)", "get", "get", ""},
		{"DateTime64 as DateTime", "DateTime", "DateTime64(6, 'UTC')", at, at.UTC(), ""},
		{"DateTime after 2106", "DateTime", "DateTime64(6, 'UTC')", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), nil, "outside the DateTime range"},
		{"DateTime before 1970", "DateTime('UTC')", "DateTime64(6, 'UTC')", time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), nil, "outside the DateTime range"},
		{"DateTime64 of other precision", "DateTime64(3)", "DateTime64(6, 'UTC')", at, at.UTC(), ""},
		{"Map as JSON in a String", "String", "Map(LowCardinality(String), String)", map[string]string{"a": "1"}, `{"a":"1"}`, ""},
		{"empty Map as empty String", "String", "Map(LowCardinality(String), String)", map[string]string{}, "", ""},
		{"Map as Map", "Map(String, String)", "Map(LowCardinality(String), String)", map[string]string{"a": "1"}, map[string]string{"a": "1"}, ""},
		{"Array(LowCardinality) as Array(String)", "Array(String)", "Array(LowCardinality(String))", []string{"g"}, []string{"g"}, ""},
		{"UInt16 in a wider column", "UInt32", "UInt16", uint16(7), uint32(7), ""},
		{"Int64 nanoseconds in Int32 out of range", "Int32", "Int64", int64(1) << 40, nil, "out of the column's range"},
		{"negative into unsigned", "UInt64", "Int64", int64(-1), nil, "negative"},
		{"number as String", "String", "UInt64", uint64(42), "42", ""},
		{"Array(UInt8) cannot hold strings", "Array(UInt8)", "Array(String)", []string{"x"}, nil, "cannot hold"},
		{"unknown type", "IPv6", "String", "::1", nil, "cannot hold"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conv, err := converterFor(c.typ, c.want)
			if err == nil {
				var out any
				out, err = conv(c.in)
				if err == nil && !reflect.DeepEqual(out, c.out) {
					t.Fatalf("converted %#v to %#v, want %#v", c.in, out, c.out)
				}
			}
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("error %v, want one containing %q", err, c.err)
			}
		})
	}
}

func TestReadBack(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 14, 1, 2, 0, time.FixedZone("CET", 3600))
	cases := []struct {
		name string
		in   any
		want any
	}{
		{"time to UTC", at, at.UTC()},
		{"JSON map", `{"a":"1"}`, map[string]string{"a": "1"}},
		{"empty String as no map", "", map[string]string(nil)},
		{"UInt32 to uint16", uint32(403), uint16(403)},
		{"Int32 to int64", int32(-5), int64(-5)},
		{"string as is", "x", "x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := readBack(c.in, reflect.TypeOf(c.want))
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("readBack(%#v) = %#v, %v; want %#v", c.in, got, err, c.want)
			}
		})
	}
	if _, err := readBack("not json", reflect.TypeOf(map[string]string{})); err == nil {
		t.Error("readBack of a String that is not JSON into a map: no error")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Config
		errs []string
	}{
		{"defaults suffice", Config{Addresses: []string{"ch:9000"}}, nil},
		{"every problem at once", Config{Addresses: []string{"nohost"}, Database: "a-b", Compression: "gzip", DialTimeout: -1},
			[]string{`addresses[0]: "nohost"`, `database: "a-b"`, `compression: "gzip"`, "must not be negative"}},
		{"no address", Config{}, []string{"addresses: at least one"}},
		{"own table without skipMigrate", Config{Addresses: []string{"ch:9000"}, Table: "mine"}, []string{"needs skipMigrate"}},
		{"own table with skipMigrate", Config{Addresses: []string{"ch:9000"}, Table: "mine", SkipMigrate: true}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.cfg.withDefaults().validate()
			if len(c.errs) == 0 && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, want := range c.errs {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestPasswordNotInErrors(t *testing.T) {
	t.Parallel()
	cfg := Config{Addresses: []string{"127.0.0.1:1"}, Password: "s3cr3t-pw", DialTimeout: time.Second}
	_, err := Open(t.Context(), cfg)
	if err == nil {
		t.Fatal("Open of an address where nothing listens succeeded")
	}
	if strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("the password appears in the error: %v", err)
	}
}
