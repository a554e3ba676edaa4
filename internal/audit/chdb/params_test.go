package chdb

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/storetest"
)

// hostile are values that would change a query pasted into its text; bound as parameters they
// must come back byte for byte and match only themselves.
var hostile = []string{
	"",
	"alice",
	"it's",
	`\`,
	`\'`,
	`'\`,
	`') OR 1=1 --`,
	`' OR '1'='1`,
	`x' UNION SELECT name FROM system.tables --`,
	"a\x00b",
	"line1\nline2",
	"cr\rtab\tff\fbs\b",
	`\N`,
	`\n`,
	"{x:String}",
	"Ünïcødé 日本語 🙂",
	"\xff\xfe invalid utf-8",
	"/*", "*/", ";", "; DROP TABLE kaccess.audit_events",
	strings.Repeat("long'\\", 20000),
}

func TestQueryJSONRoundTrip(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	for i, v := range hostile {
		var got []string
		err := s.QueryJSON(ctx, "SELECT hex({v:String}) AS h, length({v:String}) AS n", map[string]string{"v": v},
			func(row []byte) error {
				var r struct {
					H string
					N json.Number
				}
				if err := json.Unmarshal(row, &r); err != nil {
					return fmt.Errorf("row %s: %w", row, err)
				}
				got = append(got, r.H+"/"+r.N.String())
				return nil
			})
		if err != nil {
			t.Fatalf("value %d %q: %v", i, truncate(v, 40), err)
		}
		want := fmt.Sprintf("%X/%d", v, len(v))
		if len(got) != 1 || got[0] != want {
			t.Errorf("value %d %q came back as %q, want %q", i, truncate(v, 40), got, want)
		}
	}
}

// TestQueryJSONMatchesLiterally stores one event per hostile name and looks each up: exactly
// its own row must match, never all rows (an injected OR) nor none (a mangled value).
func TestQueryJSONMatchesLiterally(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	evs := storetest.Realistic("gw-params", 1, len(hostile), time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC))
	for i, e := range evs {
		e.Name = hostile[i]
	}
	if err := s.Write(ctx, "params-1", evs); err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		var ids []string
		err := s.QueryJSON(ctx, "SELECT event_id FROM kaccess.audit_events WHERE name = {name:String} AND gateway_instance = {gw:String}",
			map[string]string{"name": e.Name, "gw": "gw-params"}, func(row []byte) error {
				var r struct {
					EventID string `json:"event_id"`
				}
				if err := json.Unmarshal(row, &r); err != nil {
					return err
				}
				ids = append(ids, r.EventID)
				return nil
			})
		if err != nil {
			t.Fatalf("name %d %q: %v", i, truncate(e.Name, 40), err)
		}
		if len(ids) != 1 || ids[0] != e.EventID {
			t.Errorf("name %d %q matched %v, want only %s", i, truncate(e.Name, 40), ids, e.EventID)
		}
	}
}

func TestQueryJSONTypes(t *testing.T) {
	s := openTest(t, Config{})
	var row string
	err := s.QueryJSON(context.Background(),
		"SELECT {n:UInt32} + 1 AS n, {t:DateTime64(6, 'UTC')} AS t, splitByChar(',', {list:String}) AS l",
		map[string]string{"n": "41", "t": "2026-11-24 10:00:00.123456", "list": "kube-system,it's"},
		func(b []byte) error { row = string(b); return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := `{"n":42,"t":"2026-11-24 10:00:00.123456","l":["kube-system","it's"]}`
	if row != want {
		t.Errorf("got %s, want %s", row, want)
	}
}

func TestQueryJSONRefuses(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	none := func([]byte) error { return nil }
	for _, tc := range []struct {
		name, sql string
		params    map[string]string
		want      string
	}{
		{"name with a space", "SELECT {a:String}", map[string]string{"a b": "x", "a": "y"}, "not valid"},
		{"name with a quote", "SELECT 1", map[string]string{"a'": "x"}, "not valid"},
		{"name with a digit first", "SELECT 1", map[string]string{"1a": "x"}, "not valid"},
		{"name with a dash", "SELECT 1", map[string]string{"a-b": "x"}, "not valid"},
		{"empty name", "SELECT 1", map[string]string{"": "x"}, "not valid"},
		{"unbound placeholder", "SELECT {a:String}, {b:String}", map[string]string{"a": "x"}, "{b:...} has no value"},
		{"not a select", "DROP TABLE kaccess.audit_events", nil, "only a SELECT"},
		{"insert", "INSERT INTO kaccess.audit_events SELECT * FROM kaccess.audit_events", nil, "only a SELECT"},
		{"second statement", "SELECT 1; DROP TABLE kaccess.audit_events", nil, "one statement"},
		{"second statement after a comment", "SELECT 1 /* ; */ -- x\n; DROP TABLE kaccess.audit_events", nil, "one statement"},
		{"second statement after a literal", "SELECT ';' AS a, 'it\\'s' AS b; DROP TABLE kaccess.audit_events", nil, "one statement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.QueryJSON(ctx, tc.sql, tc.params, none)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The table is still there.
	if _, err := s.Query(ctx, "SELECT count() FROM kaccess.audit_events", ""); err != nil {
		t.Fatal(err)
	}
}

// TestQueryJSONResets: no value outlives its query on the helper's session, also when the
// query fails.
func TestQueryJSONResets(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	if err := s.QueryJSON(ctx, "SELECT {secret:String} AS v", map[string]string{"secret": "s3cr3t"}, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.QueryJSON(ctx, "SELECT {other:String} AS v, no_such_column", map[string]string{"other": "s3cr3t"}, func([]byte) error { return nil }); err == nil {
		t.Fatal("a query on an unknown column succeeded")
	}
	out, err := s.Query(ctx, "SELECT {secret:String} AS a, {other:String} AS b", "JSONEachRow")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != `{"a":"","b":""}` {
		t.Errorf("after the queries the session holds %s, want empty values", got)
	}
}

// TestQueryJSONConcurrent: callers binding the same name at once each see their own value.
func TestQueryJSONConcurrent(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 8 {
				want := fmt.Sprintf("caller-%d-%d", g, i)
				err := s.QueryJSON(ctx, "SELECT {v:String} AS v", map[string]string{"v": want}, func(row []byte) error {
					if got := string(row); got != `{"v":"`+want+`"}` {
						return fmt.Errorf("got %s, want %s", got, want)
					}
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEscapeText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{`a\b`, `a\\b`},
		{"a\nb\tc\rd\x00e", `a\nb\tc\rd\0e`},
		{"it's", "it's"}, // the SQL literal quotes it, not this layer
	} {
		if got := escapeText(tc.in); got != tc.want {
			t.Errorf("escapeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCheckSelect(t *testing.T) {
	for _, tc := range []struct {
		sql string
		ok  bool
	}{
		{"SELECT 1", true},
		{"  with x AS (SELECT 1) SELECT * FROM x", true},
		{"SELECT ';' AS a;", true},
		{"SELECT 'a\\';' AS a", true}, // escaped quote keeps the ';' inside
		{"SELECT 'a'';' AS a", true},  // doubled quote too
		{"SELECT `a;b` FROM t", true},
		{"SELECT 1 -- ; DROP\n", true},
		{"SELECT 1 /* ; DROP */", true},
		{"SELECT 1; ", true},
		{"SELECT $$it's; fine$$ AS a", true},
		{"SELECT $x$;$x$ AS a", true},
		{"SELECT $$'$$; DROP TABLE t; $$'$$", false},
		{"SELECT 1 # ; DROP TABLE t\n", false}, // refused: not worth telling ClickHouse's '#' rules apart
		{"SELECT 1; SELECT 2", false},
		{"SELECT 'a\\'';' ; DROP TABLE t", false},
		{"SELECTED", false},
		{"ALTER TABLE t DELETE WHERE 1", false},
	} {
		if err := checkSelect(tc.sql); (err == nil) != tc.ok {
			t.Errorf("checkSelect(%q) = %v, want ok=%v", tc.sql, err, tc.ok)
		}
	}
}
