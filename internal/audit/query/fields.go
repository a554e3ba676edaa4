package query

import (
	"slices"
	"strings"

	"go.einride.tech/aip/filtering"
	expr "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
)

// fieldType is how a field is compared and bound.
type fieldType int

const (
	fieldString fieldType = iota
	fieldInt
	fieldTime
	fieldList // Array(String): `groups:"x"` tests membership
)

// Field is one filterable event field. Its name is the column's, so a filter reads like the SQL
// a person would write by hand.
type Field struct {
	Name string
	typ  fieldType
}

// eventFields are the filterable fields of audit events. Bodies and Extra are left out on
// purpose: they are large, redacted and not what a filter should scan.
var eventFields = NewFieldSet(
	[]string{
		"event_id", "kind", "stage", "cluster", "gateway_instance", "request_id", "user", "uid",
		"source", "session_id_hash", "impersonated_user", "source_ip", "user_agent", "verb",
		"api_group", "api_version", "resource", "subresource", "namespace", "name", "request_uri",
		"method", "decision", "refusal_reason", "level",
	},
	[]string{"response_code", "latency_ns", "duration_ns", "bytes_in", "bytes_out", "seq"},
	[]string{"time"},
	[]string{"groups", "impersonated_groups", "grant_ids"},
)

// fields are the event fields by name.
var fields = eventFields.fields

// FieldSet is what a filter may name: columns of one table with their types, so the same
// AIP-160 compiler serves audit events and other tables (findings).
type FieldSet struct {
	fields map[string]Field
	decls  *filtering.Declarations
}

// NewFieldSet declares columns by type: strings, whole numbers, DateTime64(6, 'UTC') times
// and Array(String) lists. A name is the column's.
func NewFieldSet(strs, ints, times, lists []string) *FieldSet {
	m := map[string]Field{}
	for _, n := range strs {
		m[n] = Field{n, fieldString}
	}
	for _, n := range ints {
		m[n] = Field{n, fieldInt}
	}
	for _, n := range times {
		m[n] = Field{n, fieldTime}
	}
	for _, n := range lists {
		m[n] = Field{n, fieldList}
	}
	return &FieldSet{fields: m, decls: declare(m)}
}

// names returns the field names, sorted.
func (fs *FieldSet) names() []string {
	names := make([]string, 0, len(fs.fields))
	for n := range fs.fields {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// known lists the field names for error messages.
func (fs *FieldSet) known() string { return strings.Join(fs.names(), ", ") }

// FieldNames returns the filterable (and groupable) field names, sorted.
func FieldNames() []string { return eventFields.names() }

// groupable reports whether a field may be an Aggregate group: scalar fields only.
func groupable(name string) bool {
	f, ok := fields[name]
	return ok && (f.typ == fieldString || f.typ == fieldInt)
}

// anyValue is the `*` of `name:*` (presence), declared as an identifier so the type checker
// accepts it; the compiler turns it into a test for a non-empty value.
const anyValue = "*"

// Overload ids for value lists, `verb:("get" "list")` and `verb:("get" OR "list")`: the parser
// reads the parenthesised values as a sequence (FUZZY) or an OR of values, which the standard
// declarations only allow over booleans.
const (
	overloadFuzzyString = "kaccess_fuzzy_string"
	overloadOrString    = "kaccess_or_string"
	overloadFuzzyInt    = "kaccess_fuzzy_int"
	overloadOrInt       = "kaccess_or_int"
	overloadHasInt      = "kaccess_has_int"
)

// declare returns what filters are type-checked against: every field with its type, the
// standard functions, and the value-list forms above.
func declare(fields map[string]Field) *filtering.Declarations {
	opts := []filtering.DeclarationOption{
		filtering.DeclareStandardFunctions(),
		filtering.DeclareIdent(anyValue, filtering.TypeString),
		filtering.DeclareFunction(filtering.FunctionFuzzyAnd,
			filtering.NewFunctionOverload(overloadFuzzyString, filtering.TypeString, filtering.TypeString, filtering.TypeString),
			filtering.NewFunctionOverload(overloadFuzzyInt, filtering.TypeInt, filtering.TypeInt, filtering.TypeInt),
			filtering.NewFunctionOverload("kaccess_fuzzy_bool", filtering.TypeBool, filtering.TypeBool, filtering.TypeBool)),
		filtering.DeclareFunction(filtering.FunctionOr,
			filtering.NewFunctionOverload(overloadOrString, filtering.TypeString, filtering.TypeString, filtering.TypeString),
			filtering.NewFunctionOverload(overloadOrInt, filtering.TypeInt, filtering.TypeInt, filtering.TypeInt)),
		filtering.DeclareFunction(filtering.FunctionHas,
			filtering.NewFunctionOverload(overloadHasInt, filtering.TypeBool, filtering.TypeInt, filtering.TypeInt)),
	}
	for _, f := range fields {
		opts = append(opts, filtering.DeclareIdent(f.Name, declType(f.typ)))
	}
	d, err := filtering.NewDeclarations(opts...)
	if err != nil {
		panic("query: filter declarations: " + err.Error())
	}
	return d
}

func declType(t fieldType) *expr.Type {
	switch t {
	case fieldInt:
		return filtering.TypeInt
	case fieldTime:
		return filtering.TypeTimestamp
	case fieldList:
		return filtering.TypeList(filtering.TypeString)
	default:
		return filtering.TypeString
	}
}

// knownFields lists the field names for error messages.
func knownFields() string { return strings.Join(FieldNames(), ", ") }
