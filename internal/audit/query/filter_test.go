package query

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filter   string
		col      int
		contains string
	}{
		{`usr = "alice"`, 1, `unknown field "usr"`},
		{`verb = get`, 8, `expected a value: quote strings`},
		{`verb:("get" list)`, 13, `expected a value: quote strings`},
		{`user = "alice" AND verb = 5`, 27, "expected a quoted string for verb"},
		{`response_code = "x"`, 17, "expected a whole number"},
		{`groups = "a"`, 1, `groups:"value"`},
		{`(user = "a"`, 12, "ends too early"},
		{`user = `, 7, "ends too early"},
		{`time > "yesterday"`, 8, "RFC 3339"},
		{`user.name = "x"`, 1, "no members"},
		{strings.Repeat(`user = "a" OR `, 70) + `user = "b"`, 0, "more than 64 operators"},
	} {
		_, err := Compile(tc.filter, "f")
		var fe *FilterError
		if !errors.As(err, &fe) {
			t.Errorf("%s: got %v, want a FilterError", tc.filter, err)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: not ErrInvalid", tc.filter)
		}
		if tc.col != 0 && fe.Column != tc.col {
			t.Errorf("%s: column %d, want %d (%v)", tc.filter, fe.Column, tc.col, err)
		}
		if !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s: %v, want it to say %q", tc.filter, err, tc.contains)
		}
	}
}

func TestCompileForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ filter, sql string }{
		{``, `1`},
		{`user = "alice"`, "(`user` = {f0:String})"},
		{`verb:("get" "list")`, "((`verb` = {f0:String}) OR (`verb` = {f1:String}))"},
		{`name:*`, "(`name` != '')"},
		{`name = "web-*"`, "startsWith(`name`, {f0:String})"},
		{`groups:"corp:devs"`, "has(`groups`, {f0:String})"},
		{`NOT response_code < 400`, "NOT (`response_code` < {f0:Int64})"},
		{`-user = "a"`, "NOT (`user` = {f0:String})"},
		{`time >= "2026-11-24T10:00:00+01:00"`, "(`time` >= {f0:DateTime64(6, 'UTC')})"},
	} {
		w, err := Compile(tc.filter, "f")
		if err != nil {
			t.Errorf("%s: %v", tc.filter, err)
			continue
		}
		if w.SQL != tc.sql {
			t.Errorf("%s:\n got %s\nwant %s", tc.filter, w.SQL, tc.sql)
		}
	}
	w, _ := Compile(`time >= "2026-11-24T10:00:00+01:00"`, "f")
	if w.Params["f0"] != "2026-11-24 09:00:00.000000" {
		t.Errorf("time parameter %q, want it in UTC", w.Params["f0"])
	}
}

// safeSQL is everything a compiled filter may contain once its placeholders are removed:
// declared column names, operators, keywords and punctuation. Any user text would fail it.
var (
	placeholderRE = regexp.MustCompile(`\{f[0-9]+:(String|Int64|DateTime64\(6, 'UTC'\))\}`)
	tokenRE       = regexp.MustCompile("`[a-z_]+`|[a-zA-Z]+|!=|<=|>=|[=<>(),]|''|[0-9]+|\\s+")
)

func assertSafe(t *testing.T, filter string, w Where) {
	t.Helper()
	rest := placeholderRE.ReplaceAllString(w.SQL, "")
	for _, tok := range tokenRE.FindAllString(rest, -1) {
		if strings.HasPrefix(tok, "`") {
			if _, ok := fields[strings.Trim(tok, "`")]; !ok {
				t.Fatalf("filter %q: SQL names an undeclared column %s: %s", filter, tok, w.SQL)
			}
		}
	}
	if leftover := tokenRE.ReplaceAllString(rest, ""); leftover != "" {
		t.Fatalf("filter %q: SQL holds %q outside placeholders: %s", filter, leftover, w.SQL)
	}
	words := regexp.MustCompile(`[a-zA-Z]+`).FindAllString(regexp.MustCompile("`[a-z_]+`").ReplaceAllString(rest, ""), -1)
	for _, word := range words {
		switch word {
		case "AND", "OR", "NOT", "startsWith", "has", "notEmpty":
		default:
			t.Fatalf("filter %q: SQL holds the word %q: %s", filter, word, w.SQL)
		}
	}
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`user = "alice" AND resource = "secrets" AND verb:("get" "list")`,
		`user = "a' OR 1=1 --"`,
		`user = "a\" OR 1=1 --"`,
		`name = "x'); DROP TABLE audit_events; --"`,
		`name = "{f0:String}"`,
		"name = \"\\x00\\n\"",
		`user = "\\" OR user = "'"`,
		"user = `x`",
		`name:*`, `groups:"corp:devs"`, `NOT response_code >= 400`, `time > "2026-11-24T10:00:00Z"`,
		`latency_ns > 1000 OR bytes_out < -5`, `(user = "a"`, `user:(a b c)`, `-verb = "get"`,
		`time > timestamp("2026-11-24T10:00:00Z")`, `response_code:(401 403)`, `a.b = "c"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		w, err := Compile(filter, "f")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("filter %q: error %v is not ErrInvalid", filter, err)
			}
			return
		}
		assertSafe(t, filter, w)
	})
}
