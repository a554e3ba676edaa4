// Package engine is the only package that links chdb-go. Its package init loads libchdb.so and
// panics when the library is missing, so only the kaccess-chdb helper binary may import this
// package; the gateway talks to that helper through internal/audit/chdb instead.
package engine

import (
	"fmt"

	chdb "github.com/chdb-io/chdb-go/chdb"
)

// Engine is a persistent chDB session on a data directory. chdb-go allows one session per
// process, and the directory is locked by it: one Engine per helper process.
type Engine struct {
	s *chdb.Session
}

// Open opens (or creates) the chDB data directory dir.
func Open(dir string) (*Engine, error) {
	if dir == "" {
		return nil, fmt.Errorf("chdb engine: a data directory is required (an empty one would be a temporary session that loses the audit log)")
	}
	s, err := chdb.NewSession(dir)
	if err != nil {
		return nil, fmt.Errorf("open chDB session on %s: %w", dir, err)
	}
	return &Engine{s: s}, nil
}

// Query runs sql and returns its result in format (any ClickHouse output format).
func (e *Engine) Query(sql, format string) ([]byte, error) {
	res, err := e.s.Query(sql, format)
	if err != nil {
		return nil, err
	}
	defer res.Free()
	if err := res.Error(); err != nil {
		return nil, err
	}
	// Buf points into memory chDB frees with the result: copy it out first.
	return append([]byte(nil), res.Buf()...), nil
}

// Close closes the session, flushing nothing: every INSERT is already on disk when it returns.
func (e *Engine) Close() { e.s.Close() }
