// Package query answers questions about the audit record: search with AIP-160 filters and
// keyset pagination, counts over time buckets, streaming export of a whole result set, and a
// live tail. Filters are compiled to SQL whose every user-supplied value is a {name:Type}
// query parameter, so no text of a caller ever becomes part of a statement.
//
// It runs on either audit store (the embedded chDB one or a ClickHouse server) through Querier.
//
// Filter semantics beyond AIP-160's letter, chosen for audit questions:
//   - `field = "web-*"` is a prefix match (a trailing * only), as is `field:"web-*"` on a
//     single-valued field.
//   - `field:"v"` on a single-valued field is equality; on groups, impersonated_groups and
//     grant_ids it is membership. `field:("a" "b")` and `field:("a" OR "b")` match any of them.
//   - `field:*` means the field is set (non-empty, non-zero).
//   - Times are RFC 3339 strings (or timestamp("...")); durations are the *_ns integers.
package query

import (
	"context"
	"errors"

	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Querier runs a read-only SELECT whose {name:Type} placeholders are bound to params and calls
// each with every result row, one JSON object per row (ClickHouse's JSONEachRow). Both audit
// stores implement it.
type Querier interface {
	QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error
}

// ErrInvalid marks errors caused by what the caller asked (a bad filter, page token, order or
// bucket), as opposed to a store that failed: the API maps it to InvalidArgument.
var ErrInvalid = errors.New("invalid query")

// table returns the quoted events table of database (default schema.DefaultDatabase). The name
// comes from configuration, never from a request, and is quoted all the same.
func table(database string) string {
	if database == "" {
		database = schema.DefaultDatabase
	}
	return quoteIdent(database) + "." + quoteIdent(schema.Table)
}

func quoteIdent(name string) string {
	out := make([]byte, 0, len(name)+2)
	out = append(out, '`')
	for i := 0; i < len(name); i++ {
		if name[i] == '`' || name[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, name[i])
	}
	return string(append(out, '`'))
}
