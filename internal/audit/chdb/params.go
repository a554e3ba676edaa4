package chdb

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/kaccess/kaccess/internal/audit/schema"
)

// QueryJSON runs a read-only SELECT whose {name:Type} placeholders are bound to params and calls
// each with every result row, one JSON object per row (JSONEachRow).
//
// Values never enter the query text. They are bound as ClickHouse query parameters with
// `SET param_<name> = ...` on the helper's session, in the same locked section as the query,
// and reset afterwards. (chDB 26.7 takes query parameters only this way: a SETTINGS
// param_x clause on the SELECT itself is not seen by the parameter substitution.)
//
// A value is the parameter's plain text: ClickHouse parses it with the placeholder's type, so
// "42" suits {n:UInt32} and "2026-11-24 10:00:00.000000" suits {t:DateTime64(6, 'UTC')}. Every
// byte of a value reaches a String placeholder as it is (quotes, backslashes, NUL, newlines).
// For a list, pass one String and split it in SQL (splitByChar(',', {list:String})):
// composite types would parse the value in their own quoted syntax.
//
// Every placeholder must have a value: a missing one is an error here rather than a stale value
// from an earlier query. The whole result is held in memory (the helper answers in one frame),
// so callers bound it with LIMIT; each runs after the store is released, so it may query again.
func (s *Store) QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error {
	if err := checkSelect(sql); err != nil {
		return err
	}
	names, err := paramNames(sql, params)
	if err != nil {
		return err
	}
	var out []byte
	err = s.withHelper(ctx, func(h *helper) (err error) {
		if len(names) > 0 {
			if _, err := h.query(ctx, []byte(setParams(names, params)), "TabSeparated"); err != nil {
				return fmt.Errorf("bind query parameters: %w", err)
			}
			// Reset even when the query fails, so no value outlives its query on the session.
			defer func() {
				if _, rerr := h.query(ctx, []byte(setParams(names, nil)), "TabSeparated"); rerr != nil && err == nil {
					err = fmt.Errorf("reset query parameters: %w", rerr)
				}
			}()
		}
		out, err = h.query(ctx, []byte(sql), "JSONEachRow")
		return err
	})
	if err != nil {
		return err
	}
	for len(out) > 0 {
		row, rest, _ := bytes.Cut(out, []byte{'\n'})
		out = rest
		if len(row) == 0 {
			continue
		}
		if err := each(row); err != nil {
			return err
		}
	}
	return nil
}

var (
	paramName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	// placeholder finds {name:Type}; a lookalike inside a string literal is counted too, which
	// at worst asks for a value the query does not use.
	placeholder = regexp.MustCompile(`\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*:`)
	firstWord   = regexp.MustCompile(`^(?i)\s*(SELECT|WITH)\b`)
	heredocTag  = regexp.MustCompile(`^\$[a-zA-Z0-9_]*\$`)
)

// paramNames checks the names of params and that every placeholder of sql has a value; it
// returns the names sorted, so the SET statement is the same for the same params.
func paramNames(sql string, params map[string]string) ([]string, error) {
	names := make([]string, 0, len(params))
	for name := range params {
		if !paramName.MatchString(name) {
			return nil, fmt.Errorf("query parameter name %q is not valid: use letters, digits and underscores, not starting with a digit", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, m := range placeholder.FindAllStringSubmatch(sql, -1) {
		if _, ok := params[m[1]]; !ok {
			return nil, fmt.Errorf("query placeholder {%s:...} has no value: add %q to the parameters", m[1], m[1])
		}
	}
	return names, nil
}

// checkSelect refuses anything but one SELECT (or WITH ... SELECT). The SQL is written by
// kaccess code (detections, compiled filters), never by a user, so this catches a programming
// mistake rather than being a sandbox; it matters because chDB 26.7 runs every statement of a
// ';'-separated text, so "SELECT 1; DROP TABLE t" would drop the table.
func checkSelect(sql string) error {
	if !firstWord.MatchString(sql) {
		return fmt.Errorf("QueryJSON runs only a SELECT (or WITH ... SELECT); the query starts with %q", truncate(strings.TrimSpace(sql), 30))
	}
	if i := statementEnd(sql); i >= 0 && strings.TrimSpace(sql[i+1:]) != "" {
		return fmt.Errorf("QueryJSON runs one statement; remove what follows the ';' at byte %d", i)
	}
	return nil
}

// statementEnd returns the offset of the first ';' outside string literals, quoted identifiers
// and comments, or -1. Where it could misread ClickHouse's lexer it errs towards seeing a ';'
// (a '#' comment is not skipped, a nested comment ends early), which refuses, never admits.
func statementEnd(sql string) int {
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == ';':
			return i
		case c == '\'', c == '"', c == '`':
			i = skipQuoted(sql, i)
		case c == '$':
			// A heredoc literal, $tag$...$tag$: skip to its end, so a quote inside it does not
			// open a literal that would hide a real ';'.
			if tag := heredocTag.FindString(sql[i:]); tag != "" {
				j := strings.Index(sql[i+len(tag):], tag)
				if j < 0 {
					return -1
				}
				i += len(tag) + j + len(tag) - 1
			}
		case strings.HasPrefix(sql[i:], "--"):
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j
			} else {
				return -1
			}
		case strings.HasPrefix(sql[i:], "/*"):
			if j := strings.Index(sql[i+2:], "*/"); j >= 0 {
				i += j + 3
			} else {
				return -1
			}
		}
	}
	return -1
}

// skipQuoted returns the offset of the quote closing the one at i (backslash escapes and doubled
// quotes understood), or the end of sql.
func skipQuoted(sql string, i int) int {
	q := sql[i]
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			j++
		case q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j
		}
	}
	return len(sql)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// setParams is one SET statement binding names to their values in params, or to the empty
// string when params is nil (the reset). A value goes through two decodings in ClickHouse:
// the SQL string literal, then the escaped (TSV) text format of the placeholder's type; so it
// is escaped for the second and quoted for the first.
func setParams(names []string, params map[string]string) string {
	var b strings.Builder
	b.WriteString("SET ")
	for i, name := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("param_")
		b.WriteString(name) // checked against paramName
		b.WriteString(" = ")
		b.WriteString(schema.StringLiteral(escapeText(params[name])))
	}
	return b.String()
}

// escapeText writes v in ClickHouse's escaped text format, in which query parameter values are
// parsed: backslash and the control characters that end or break a field are escaped; every
// other byte, UTF-8 or not, stays as it is.
func escapeText(v string) string {
	if !strings.ContainsAny(v, "\\\n\t\r\x00\b\f") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 8)
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case 0:
			b.WriteString(`\0`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
