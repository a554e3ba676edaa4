package query

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.einride.tech/aip/filtering"
	expr "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
)

// Limits on a filter: it is parsed and compiled per request, and every operator becomes SQL the
// store has to evaluate on every candidate row.
const (
	MaxFilterBytes = 4096
	MaxOperators   = 64
)

// FilterError is a filter that cannot be used: where it goes wrong (1-based line and column,
// counted in characters) and what was expected there.
type FilterError struct {
	Line, Column int
	Msg          string
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("filter %d:%d: %s", e.Line, e.Column, e.Msg)
}

// Is makes every FilterError an ErrInvalid.
func (e *FilterError) Is(target error) bool { return target == ErrInvalid }

// Where is a compiled filter: a SQL boolean expression and the values of its placeholders.
type Where struct {
	SQL    string            // "1" for an empty filter
	Params map[string]string // placeholder name -> value, as text ClickHouse parses for its type
}

// Compile parses filter (AIP-160), type-checks it against the declared fields and compiles it
// to SQL. Placeholders are named prefix0, prefix1, ...; prefix keeps them apart from others in
// the same statement.
func Compile(filter, prefix string) (Where, error) { return eventFields.Compile(filter, prefix) }

// Compile is the package's Compile over the fields of fs.
func (fs *FieldSet) Compile(filter, prefix string) (Where, error) {
	w := Where{SQL: "1", Params: map[string]string{}}
	if strings.TrimSpace(filter) == "" {
		return w, nil
	}
	if len(filter) > MaxFilterBytes {
		return w, &FilterError{1, 1, fmt.Sprintf("the filter is %d bytes, more than the %d allowed: narrow it or split the question", len(filter), MaxFilterBytes)}
	}
	if !utf8.ValidString(filter) {
		return w, &FilterError{1, 1, "the filter is not valid UTF-8"}
	}
	var p filtering.Parser
	p.Init(filter)
	parsed, err := p.Parse()
	if err != nil {
		return w, parseError(filter, err)
	}
	c := &compiler{fs: fs, filter: filter, src: parsed.GetSourceInfo(), prefix: prefix, params: w.Params}
	// Unknown fields first: the checker names them without a position.
	if err := c.checkIdents(parsed.GetExpr()); err != nil {
		return w, err
	}
	// The compiler checks each restriction's types itself, so that a mistake is reported where
	// it is; the library's checker then confirms the whole against the declarations.
	sql, err := c.boolean(parsed.GetExpr())
	if err != nil {
		return w, err
	}
	var ch filtering.Checker
	ch.Init(parsed.GetExpr(), parsed.GetSourceInfo(), fs.decls)
	if _, err := ch.Check(); err != nil {
		return w, &FilterError{1, 1, "type error: " + err.Error() + ` (strings are quoted, numbers are not, times are RFC 3339 strings; value lists look like verb:("get" "list"))`}
	}
	w.SQL = sql
	return w, nil
}

// positioned is what the parser's errors offer (an unexported interface there).
type positioned interface {
	Position() filtering.Position
	Message() string
}

// parseError keeps the innermost positioned error of the parser's chain: the most precise
// statement of what was expected where.
func parseError(filter string, err error) error {
	var best positioned
	for e := err; e != nil; e = errors.Unwrap(e) {
		if p, ok := e.(positioned); ok {
			best = p
		}
	}
	if best == nil {
		return &FilterError{1, 1, err.Error()}
	}
	pos := best.Position()
	if int(pos.Offset) >= len(strings.TrimRight(filter, " \t\r\n")) {
		return &FilterError{int(pos.Line), int(pos.Column), "the filter ends too early: expected a value or a closing parenthesis"}
	}
	return &FilterError{int(pos.Line), int(pos.Column), best.Message() + near(filter, int(pos.Offset))}
}

type compiler struct {
	fs     *FieldSet
	filter string
	src    *expr.SourceInfo
	prefix string
	params map[string]string
	ops    int
}

// errAt returns a FilterError at e's position.
func (c *compiler) errAt(e *expr.Expr, format string, args ...any) error {
	off := int(c.src.GetPositions()[e.GetId()])
	line, col := lineCol(c.filter, off)
	return &FilterError{line, col, fmt.Sprintf(format, args...) + near(c.filter, off)}
}

func lineCol(s string, off int) (int, int) {
	if off > len(s) {
		off = len(s)
	}
	line, col := 1, 1
	for _, r := range s[:off] {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// near quotes a little of the filter at off, so the message shows the place, not only a number.
// It is a message for the caller, never SQL.
func near(s string, off int) string {
	if off < 0 || off >= len(s) {
		return ""
	}
	rest := []rune(s[off:])
	if len(rest) > 20 {
		rest = append(rest[:20], '…')
	}
	return fmt.Sprintf(" (at %q)", string(rest))
}

func (c *compiler) checkIdents(e *expr.Expr) error {
	switch k := e.GetExprKind().(type) {
	case *expr.Expr_IdentExpr:
		if _, ok := c.fs.decls.LookupIdent(k.IdentExpr.GetName()); !ok {
			return c.errAt(e, "unknown field %q: expected one of %s", k.IdentExpr.GetName(), c.fs.known())
		}
	case *expr.Expr_SelectExpr:
		return c.errAt(e, "fields have no members here: expected one of %s", c.fs.known())
	case *expr.Expr_CallExpr:
		c.ops++
		if c.ops > MaxOperators {
			return c.errAt(e, "more than %d operators: simplify the filter", MaxOperators)
		}
		// A bare word where a value belongs (verb = get) parses as a field name: say what
		// was meant rather than "unknown field".
		if args := k.CallExpr.GetArgs(); len(args) == 2 && isComparison(k.CallExpr.GetFunction()) {
			var vals []*expr.Expr
			flatten(args[1], &vals)
			for _, v := range vals {
				if id := v.GetIdentExpr(); id != nil && id.GetName() != anyValue {
					if _, ok := c.fs.decls.LookupIdent(id.GetName()); !ok {
						return c.errAt(v, `expected a value: quote strings, e.g. verb = "get"`)
					}
				}
			}
		}
		for _, a := range k.CallExpr.GetArgs() {
			if err := c.checkIdents(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func isComparison(fn string) bool {
	switch fn {
	case filtering.FunctionEquals, filtering.FunctionNotEquals, filtering.FunctionLessThan, filtering.FunctionLessEquals,
		filtering.FunctionGreaterThan, filtering.FunctionGreaterEquals, filtering.FunctionHas:
		return true
	}
	return false
}

// bind adds a parameter and returns its placeholder.
func (c *compiler) bind(typ, value string) string {
	name := c.prefix + strconv.Itoa(len(c.params))
	c.params[name] = value
	return "{" + name + ":" + typ + "}"
}

func (c *compiler) boolean(e *expr.Expr) (string, error) {
	call := e.GetCallExpr()
	if call == nil {
		return "", c.errAt(e, `expected a restriction such as user = "alice"`)
	}
	args := call.GetArgs()
	fn := call.GetFunction()
	// The grammar also admits function calls of any name and arity, e.g. NOT(a, b): check the
	// arity before reading the arguments.
	want := 2
	if fn == filtering.FunctionNot {
		want = 1
	}
	if len(args) != want && fn != filtering.FunctionAnd && fn != filtering.FunctionOr && fn != filtering.FunctionFuzzyAnd {
		return "", c.errAt(e, `expected a restriction such as user = "alice"`)
	}
	if len(args) == 0 {
		return "", c.errAt(e, `expected a restriction such as user = "alice"`)
	}
	switch fn {
	case filtering.FunctionAnd, filtering.FunctionFuzzyAnd, filtering.FunctionOr:
		op := " AND "
		if fn == filtering.FunctionOr {
			op = " OR "
		}
		parts := make([]string, len(args))
		for i, a := range args {
			s, err := c.boolean(a)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "(" + strings.Join(parts, op) + ")", nil
	case filtering.FunctionNot:
		s, err := c.boolean(args[0])
		if err != nil {
			return "", err
		}
		return "NOT " + s, nil
	case filtering.FunctionHas:
		return c.has(e, args)
	case filtering.FunctionEquals, filtering.FunctionNotEquals, filtering.FunctionLessThan,
		filtering.FunctionLessEquals, filtering.FunctionGreaterThan, filtering.FunctionGreaterEquals:
		return c.compare(e, fn, args)
	default:
		return "", c.errAt(e, "%s is not supported here", fn)
	}
}

// field returns the declared field e names.
func (c *compiler) field(e *expr.Expr) (Field, error) {
	if id := e.GetIdentExpr(); id != nil {
		if f, ok := c.fs.fields[id.GetName()]; ok {
			return f, nil
		}
	}
	return Field{}, c.errAt(e, "expected a field name on the left (one of %s)", c.fs.known())
}

func (c *compiler) compare(e *expr.Expr, fn string, args []*expr.Expr) (string, error) {
	f, err := c.field(args[0])
	if err != nil {
		return "", err
	}
	col := quoteIdent(f.Name)
	v := args[1]
	switch f.typ {
	case fieldString:
		s, ok := stringConst(v)
		if !ok {
			return "", c.errAt(v, "expected a quoted string for %s", f.Name)
		}
		if prefix, ok := strings.CutSuffix(s, "*"); ok && (fn == "=" || fn == "!=") {
			sql := "startsWith(" + col + ", " + c.bind("String", prefix) + ")"
			if fn == "!=" {
				sql = "NOT " + sql
			}
			return sql, nil
		}
		return "(" + col + " " + fn + " " + c.bind("String", s) + ")", nil
	case fieldInt:
		n, ok := intConst(v)
		if !ok {
			return "", c.errAt(v, "expected a whole number for %s", f.Name)
		}
		return "(" + col + " " + fn + " " + c.bind("Int64", strconv.FormatInt(n, 10)) + ")", nil
	case fieldTime:
		t, err := c.timeConst(v)
		if err != nil {
			return "", err
		}
		return "(" + col + " " + fn + " " + c.bind(timeType, formatTime(t)) + ")", nil
	default:
		return "", c.errAt(e, `%s holds several values: test one with %s:"value"`, f.Name, f.Name)
	}
}

// has compiles `field:value`, `field:*` and `field:(v1 v2 ...)`.
func (c *compiler) has(e *expr.Expr, args []*expr.Expr) (string, error) {
	f, err := c.field(args[0])
	if err != nil {
		return "", err
	}
	col := quoteIdent(f.Name)
	if isAny(args[1]) {
		switch f.typ {
		case fieldList:
			return "notEmpty(" + col + ")", nil
		case fieldString:
			return "(" + col + " != '')", nil
		case fieldInt:
			return "(" + col + " != 0)", nil
		default:
			return "1", nil // every event has a time
		}
	}
	var vals []*expr.Expr
	flatten(args[1], &vals)
	if len(vals) > MaxOperators {
		return "", c.errAt(args[1], "more than %d values in one list", MaxOperators)
	}
	var parts []string
	for _, v := range vals {
		switch f.typ {
		case fieldList:
			s, ok := stringConst(v)
			if !ok {
				return "", c.errAt(v, "expected a quoted string for %s", f.Name)
			}
			parts = append(parts, "has("+col+", "+c.bind("String", s)+")")
		case fieldString:
			s, ok := stringConst(v)
			if !ok {
				return "", c.errAt(v, "expected a quoted string for %s", f.Name)
			}
			if prefix, ok := strings.CutSuffix(s, "*"); ok {
				parts = append(parts, "startsWith("+col+", "+c.bind("String", prefix)+")")
			} else {
				parts = append(parts, "("+col+" = "+c.bind("String", s)+")")
			}
		case fieldInt:
			n, ok := intConst(v)
			if !ok {
				return "", c.errAt(v, "expected a whole number for %s", f.Name)
			}
			parts = append(parts, "("+col+" = "+c.bind("Int64", strconv.FormatInt(n, 10))+")")
		default:
			return "", c.errAt(e, `%s:value is not supported: compare times with <, <=, >, >=`, f.Name)
		}
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return "(" + strings.Join(parts, " OR ") + ")", nil
}

// isAny reports whether e is the `*` of `field:*`, which the lexer may read as text or a name.
func isAny(e *expr.Expr) bool {
	if id := e.GetIdentExpr(); id != nil {
		return id.GetName() == anyValue
	}
	s, ok := stringConst(e)
	return ok && s == anyValue
}

// flatten collects the values of a list `(a b c)` or `(a OR b)`.
func flatten(e *expr.Expr, out *[]*expr.Expr) {
	if call := e.GetCallExpr(); call != nil &&
		(call.GetFunction() == filtering.FunctionFuzzyAnd || call.GetFunction() == filtering.FunctionOr) {
		for _, a := range call.GetArgs() {
			flatten(a, out)
		}
		return
	}
	*out = append(*out, e)
}

func stringConst(e *expr.Expr) (string, bool) {
	k, ok := e.GetExprKind().(*expr.Expr_ConstExpr)
	if !ok {
		return "", false
	}
	s, ok := k.ConstExpr.GetConstantKind().(*expr.Constant_StringValue)
	if !ok {
		return "", false
	}
	return s.StringValue, true
}

func intConst(e *expr.Expr) (int64, bool) {
	k, ok := e.GetExprKind().(*expr.Expr_ConstExpr)
	if !ok {
		return 0, false
	}
	n, ok := k.ConstExpr.GetConstantKind().(*expr.Constant_Int64Value)
	if !ok {
		return 0, false
	}
	return n.Int64Value, true
}

// timeConst reads "2026-11-24T10:00:00Z" or timestamp("2026-11-24T10:00:00Z").
func (c *compiler) timeConst(e *expr.Expr) (time.Time, error) {
	v := e
	if call := e.GetCallExpr(); call != nil && call.GetFunction() == filtering.FunctionTimestamp && len(call.GetArgs()) == 1 {
		v = call.GetArgs()[0]
	}
	s, ok := stringConst(v)
	if !ok {
		return time.Time{}, c.errAt(e, `expected an RFC 3339 time such as "2026-11-24T10:00:00Z"`)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, c.errAt(v, `expected an RFC 3339 time such as "2026-11-24T10:00:00Z"`)
	}
	return t, nil
}

// timeType is the placeholder type of times: the time column's own type.
const timeType = "DateTime64(6, 'UTC')"

// formatTime renders t as ClickHouse parses a DateTime64(6, 'UTC') parameter.
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000") }
