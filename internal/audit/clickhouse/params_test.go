package clickhouse

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestJSONRowMatchesJSONEachRow(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 11, 24, 9, 30, 15, 123456000, time.FixedZone("x", 3600))
	var (
		tm   = ts
		id   = "it's \"quoted\"\x00"
		code = uint16(403)
		lat  = int64(1 << 40)
		seq  = uint64(7)
		grp  = []string{"a", "b"}
		ext  = map[string]string{"k": "v"}
		null *string
	)
	got, err := jsonRow([]string{"time", "event_id", "response_code", "latency_ns", "seq", "groups", "extra", "n"},
		[]any{&tm, &id, &code, &lat, &seq, &grp, &ext, &null})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-11-24 08:30:15.123456","event_id":"it's \"quoted\"\u0000","response_code":403,` +
		`"latency_ns":"1099511627776","seq":"7","groups":["a","b"],"extra":{"k":"v"},"n":null}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Error("not valid JSON")
	}
}

// The test server is ClickHouse 18.16, older than query parameters: QueryJSON must refuse
// with an error that says why and what to do, and not run the statement without its values.
func TestQueryJSONOnOldServer(t *testing.T) {
	s := mustOpen(t, newOldTable(t))
	err := s.QueryJSON(context.Background(), "SELECT {a:String} AS a", map[string]string{"a": "x"}, func([]byte) error {
		t.Error("a row from a server that cannot bind parameters")
		return nil
	})
	if s.server.less(version{22, 8}) {
		if err == nil || !strings.Contains(err.Error(), "query parameters") {
			t.Errorf("QueryJSON on %s: %v, want an error about query parameters", s.server, err)
		}
		return
	}
	if err != nil {
		t.Errorf("QueryJSON on %s: %v", s.server, err)
	}
}
