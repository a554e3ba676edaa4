package chdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Store is the embedded audit store. It implements ship.Sink and schema.Execer. Queries run one
// at a time (the helper serves one request at a time). A helper that dies is restarted by the
// next call; a call that was running when it died returns an error (the shipper retries its
// batch, which deduplication makes safe).
type Store struct {
	cfg  Config
	opts schema.Options

	mu     sync.Mutex
	h      *helper // nil when not running
	closed bool
}

// Open checks that libchdb.so and the helper are there, starts the helper on cfg.Dir and
// migrates the schema.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts, err := schemaOptions(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, opts: opts}
	// Batch files of a previous run are leftovers of inserts that either happened or will be
	// retried from the spool: start with an empty inbox.
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("chdb store: create the data directory: %w", err)
	}
	if err := os.RemoveAll(s.inbox()); err != nil {
		return nil, fmt.Errorf("chdb store: clear the batch inbox: %w", err)
	}
	if err := os.MkdirAll(s.inbox(), 0o700); err != nil {
		return nil, fmt.Errorf("chdb store: create the batch inbox: %w", err)
	}
	if err := schema.Migrate(ctx, s, opts); err != nil {
		s.Close()
		return nil, fmt.Errorf("chdb store: %w", err)
	}
	return s, nil
}

// Query runs sql and returns the result in format (a ClickHouse output format, e.g.
// "JSONEachRow"; default "TabSeparated").
func (s *Store) Query(ctx context.Context, sql, format string) ([]byte, error) {
	if format == "" {
		format = "TabSeparated"
	}
	return s.query(ctx, []byte(sql), format)
}

func (s *Store) query(ctx context.Context, sql []byte, format string) ([]byte, error) {
	var res []byte
	err := s.withHelper(ctx, func(h *helper) (err error) {
		res, err = h.query(ctx, sql, format)
		return err
	})
	return res, err
}

// withHelper runs fn on the helper while holding the store, starting the helper if needed, so
// that the statements fn sends run back to back on one session (query parameters are session
// state: another caller's SET in between would change them). A helper that fails other than
// with a query error is reaped and replaced on the next call.
func (s *Store) withHelper(ctx context.Context, fn func(h *helper) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("chdb store is closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.h != nil && s.h.hasExited() {
		s.cfg.Logger.Warn("chdb helper exited while idle; restarting it", "error", s.h.describe(errors.New("no query running")))
		s.h = nil
	}
	if s.h == nil {
		h, err := startHelper(ctx, s.cfg)
		if err != nil {
			return err
		}
		s.h = h
	}
	err := fn(s.h)
	if err != nil && !isQueryError(err) {
		s.cfg.Logger.Warn("chdb helper failed; restarting it on the next query", "error", err)
		s.h.kill()
		s.h = nil
	}
	return err
}

// Exec runs a statement that returns no rows (schema.Execer).
func (s *Store) Exec(ctx context.Context, sql string) error {
	_, err := s.Query(ctx, sql, "TabSeparated")
	return err
}

// QueryStrings runs a query of one String column and returns its values (schema.Execer).
func (s *Store) QueryStrings(ctx context.Context, sql string) ([]string, error) {
	out, err := s.Query(ctx, sql, "RowBinary")
	if err != nil {
		return nil, err
	}
	var rows []string
	for r := (rbReader{b: out}); !r.done(); {
		v := r.str()
		if r.err != nil {
			return nil, fmt.Errorf("decode %q result: %w", sql, r.err)
		}
		rows = append(rows, v)
	}
	return rows, nil
}

// Close stops the helper. The data stays in cfg.Dir.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.h != nil {
		s.h.close()
		s.h = nil
	}
	return nil
}

// table is the quoted name of the events table.
func (s *Store) table() string {
	return quoteIdent(s.opts.Database) + "." + quoteIdent(schema.Table)
}

func quoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// Write stores events with one INSERT carrying token as insert_deduplication_token: a retried
// batch (same token, same rows) is recognised and not stored again, in the first-seen rollup
// neither. The rows go through a RowBinary file in the inbox directory (see insertFormat).
func (s *Store) Write(ctx context.Context, token string, events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	if token == "" {
		return errors.New("chdb store: a batch needs a deduplication token (an empty one would disable deduplication of retries)")
	}
	buf := make([]byte, 0, len(events)*400)
	for _, e := range events {
		buf = appendRowBinary(buf, e)
	}
	f, err := os.CreateTemp(s.inbox(), "batch-*.bin")
	if err != nil {
		return fmt.Errorf("chdb store: create the batch file: %w", err)
	}
	defer os.Remove(f.Name())
	// No fsync: the batch is durable in the spool until the store has it; this file only has
	// to outlive the INSERT.
	_, err = f.Write(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("chdb store: write the batch file: %w", err)
	}
	q := fmt.Sprintf("INSERT INTO %s FROM INFILE %s SETTINGS insert_deduplicate = 1, insert_deduplication_token = %s, "+
		"deduplicate_blocks_in_dependent_materialized_views = 1 FORMAT %s",
		s.table(), schema.StringLiteral(f.Name()), schema.StringLiteral(token), insertFormat)
	if err := s.Exec(ctx, q); err != nil {
		return fmt.Errorf("insert %d audit events: %w", len(events), err)
	}
	return nil
}

// inbox is where Write puts batch files for the helper; inside the data directory, so on the
// same file system as the helper.
func (s *Store) inbox() string { return filepath.Join(s.cfg.Dir, "kaccess-inbox") }

// Events returns the stored events of one gateway instance, ordered by seq.
func (s *Store) Events(ctx context.Context, gateway string) ([]*event.Event, error) {
	sql := fmt.Sprintf("SELECT %s FROM %s WHERE gateway_instance = %s ORDER BY seq",
		strings.Join(quotedColumns(), ", "), s.table(), schema.StringLiteral(gateway))
	out, err := s.Query(ctx, sql, "RowBinary")
	if err != nil {
		return nil, err
	}
	return decodeEvents(out)
}

func quotedColumns() []string {
	names := schema.ColumnNames()
	for i, n := range names {
		names[i] = quoteIdent(n)
	}
	return names
}

// StoredSeqs returns the sequence numbers in [first, last] stored for a gateway instance
// (ship.SeqLister): the shipper sends only the missing records of a batch that may have gone
// in before a crash or a failed insert.
func (s *Store) StoredSeqs(ctx context.Context, gateway string, first, last uint64) ([]uint64, error) {
	sql := fmt.Sprintf("SELECT DISTINCT toString(seq) FROM %s WHERE gateway_instance = %s AND seq BETWEEN %d AND %d",
		s.table(), schema.StringLiteral(gateway), first, last)
	rows, err := s.QueryStrings(ctx, sql)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, 0, len(rows))
	for _, r := range rows {
		n, err := strconv.ParseUint(r, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("chdb store: stored seqs: %q is not a number", r)
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}
