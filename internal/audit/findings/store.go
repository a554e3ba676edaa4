package findings

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// DB is what the findings store needs of an audit store (the embedded chDB store and the
// ClickHouse server store both have it): statements without rows, and parameterized SELECTs.
type DB interface {
	Exec(ctx context.Context, sql string) error
	QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error
}

// Store keeps findings in the findings table (schema.FindingsTable), one row per version.
type Store struct {
	DB       DB
	Database string // default schema.DefaultDatabase
}

// ErrNotFound is returned for a fingerprint the store does not hold.
var ErrNotFound = errors.New("no finding with this id")

// ErrInvalid marks a request the caller must change (a bad filter, state or page token).
var ErrInvalid = query.ErrInvalid

const columns = "`fingerprint`, `detection`, `cluster`, `subject`, `scope`, `severity`, `technique_id`, " +
	"`technique_name`, `summary`, `state`, `first_seen`, `last_seen`, `count`, `event_ids`, `window_seconds`, " +
	"`created_at`, `updated_at`, `resolved_at`, `reason`, `actor`, `notified_firing`, `notified_resolved`, `version`"

func (s *Store) table() string {
	db := s.Database
	if db == "" {
		db = schema.DefaultDatabase
	}
	return "`" + db + "`.`" + schema.FindingsTable + "`"
}

// Put stores new versions of findings in one INSERT. Values are written as escaped literals
// (schema.StringLiteral): an INSERT cannot take query parameters on every store, and the text
// is built here from typed fields, never from a caller's SQL.
func (s *Store) Put(ctx context.Context, fs ...*Finding) error {
	if len(fs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.table() + " (" + columns + ") VALUES ")
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		ids := make([]string, len(f.EventIDs))
		for j, id := range f.EventIDs {
			ids[j] = schema.StringLiteral(id)
		}
		vals := []string{
			lit(f.Fingerprint), lit(f.Detection), lit(f.Cluster), lit(f.Subject), lit(f.Scope), lit(f.Severity),
			lit(f.TechniqueID), lit(f.TechniqueName), lit(f.Summary), lit(string(f.State)),
			timeLit(f.FirstSeen), timeLit(f.LastSeen), strconv.FormatUint(f.Count, 10),
			"[" + strings.Join(ids, ", ") + "]", strconv.FormatInt(int64(f.Window/time.Second), 10),
			timeLit(f.CreatedAt), timeLit(f.UpdatedAt), timeLit(f.ResolvedAt), lit(f.Reason), lit(f.Actor),
			boolLit(f.NotifiedFiring), boolLit(f.NotifiedResolved), strconv.FormatUint(f.Version, 10),
		}
		b.WriteString("(" + strings.Join(vals, ", ") + ")")
	}
	if err := s.DB.Exec(ctx, b.String()); err != nil {
		return fmt.Errorf("store %d finding(s): %w", len(fs), err)
	}
	return nil
}

func lit(s string) string { return schema.StringLiteral(s) }

func timeLit(t time.Time) string {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return "'" + formatTime(t) + "'"
}

func boolLit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

const timeType = "DateTime64(6, 'UTC')"

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000") }

// latest is the table with only the latest version of each finding.
func (s *Store) latest() string {
	return "(SELECT " + columns + " FROM " + s.table() + " FINAL)"
}

// Get returns the latest version of a finding.
func (s *Store) Get(ctx context.Context, fingerprint string) (*Finding, error) {
	fs, err := s.selectWhere(ctx, "`fingerprint` = {fp:String}", map[string]string{"fp": fingerprint}, "", 1)
	if err != nil {
		return nil, err
	}
	if len(fs) == 0 {
		return nil, ErrNotFound
	}
	return fs[0], nil
}

// Open returns the open findings (firing, acknowledged, silenced) of a detection.
func (s *Store) Open(ctx context.Context, detection string) ([]*Finding, error) {
	return s.selectWhere(ctx, "`detection` = {d:String} AND `state` IN ('firing', 'acknowledged', 'silenced')",
		map[string]string{"d": detection}, "", maxOpen)
}

// maxOpen bounds what one read holds in memory; a detection caps its findings at 1,000 a run.
const maxOpen = 10_000

// Owed returns the findings whose delivery is not done: firing ones (re-sent while they fire),
// and ended ones whose end was not delivered yet, including those that fired and ended while
// no receiver could be reached (they are owed both their alert and its end). A finding
// silenced from the start owes nothing.
func (s *Store) Owed(ctx context.Context) ([]*Finding, error) {
	return s.selectWhere(ctx, "(`state` = 'firing' OR (`notified_resolved` = 0 AND "+
		"(`notified_firing` = 1 OR `state` IN ('resolved', 'acknowledged'))))", nil, "", maxOpen)
}

func (s *Store) selectWhere(ctx context.Context, where string, params map[string]string, order string, limit int) ([]*Finding, error) {
	if order == "" {
		order = "`created_at` DESC, `fingerprint` DESC"
	}
	if params == nil {
		params = map[string]string{}
	}
	sql := "SELECT " + columns + " FROM " + s.latest() + " WHERE " + where + " ORDER BY " + order +
		" LIMIT " + strconv.Itoa(limit)
	var out []*Finding
	err := s.DB.QueryJSON(ctx, sql, params, func(b []byte) error {
		f, err := decode(b)
		if err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	return out, nil
}

// Fields are what a ListFindings filter may name (AIP-160), the columns of the findings table.
var Fields = query.NewFieldSet(
	[]string{"fingerprint", "detection", "cluster", "subject", "scope", "severity", "technique_id",
		"technique_name", "summary", "state", "reason", "actor"},
	[]string{"count"},
	[]string{"first_seen", "last_seen", "created_at", "updated_at", "resolved_at"},
	[]string{"event_ids"},
)

// ListRequest asks for one page of findings, newest first.
type ListRequest struct {
	Filter    string // AIP-160 over Fields
	State     State  // only this state, if set
	PageSize  int    // default 50, at most 1,000
	PageToken string // next page token of the previous page, with the same Filter and State
}

type pageToken struct {
	T int64  `json:"t"` // created_at of the last row, in microseconds
	F string `json:"f"` // its fingerprint
	H string `json:"h"` // hash of the request
}

// List returns one page of findings matching req, newest first, and the next page's token.
func (s *Store) List(ctx context.Context, req ListRequest) ([]*Finding, string, error) {
	if req.State != "" && !req.State.Valid() {
		return nil, "", fmt.Errorf("%w: state %q: use firing, acknowledged, silenced or resolved", ErrInvalid, req.State)
	}
	size := req.PageSize
	switch {
	case size < 0:
		return nil, "", fmt.Errorf("%w: page_size must not be negative", ErrInvalid)
	case size == 0:
		size = query.DefaultPageSize
	case size > query.MaxPageSize:
		size = query.MaxPageSize
	}
	w, err := Fields.Compile(req.Filter, "f")
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256([]byte(strconv.Itoa(len(req.Filter)) + ":" + req.Filter + ";" + string(req.State)))
	hash := base64.RawURLEncoding.EncodeToString(sum[:8])
	conds := []string{w.SQL}
	params := w.Params
	if req.State != "" {
		conds = append(conds, "`state` = {state:String}")
		params["state"] = string(req.State)
	}
	if req.PageToken != "" {
		var tok pageToken
		raw, err := base64.RawURLEncoding.DecodeString(req.PageToken)
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: page_token is not one this server issued: start again without it", ErrInvalid)
		}
		if tok.H != hash {
			return nil, "", fmt.Errorf("%w: page_token belongs to a listing with another filter or state: keep them across pages", ErrInvalid)
		}
		conds = append(conds, "(`created_at`, `fingerprint`) < ({after_t:"+timeType+"}, {after_f:String})")
		params["after_t"], params["after_f"] = formatTime(time.UnixMicro(tok.T)), tok.F
	}
	fs, err := s.selectWhere(ctx, strings.Join(conds, " AND "), params, "", size+1)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(fs) > size {
		fs = fs[:size]
		last := fs[size-1]
		b, _ := json.Marshal(pageToken{T: last.CreatedAt.UnixMicro(), F: last.Fingerprint, H: hash})
		next = base64.RawURLEncoding.EncodeToString(b)
	}
	return fs, next, nil
}

// row is a findings row as JSONEachRow writes it.
type row struct {
	Fingerprint      string   `json:"fingerprint"`
	Detection        string   `json:"detection"`
	Cluster          string   `json:"cluster"`
	Subject          string   `json:"subject"`
	Scope            string   `json:"scope"`
	Severity         string   `json:"severity"`
	TechniqueID      string   `json:"technique_id"`
	TechniqueName    string   `json:"technique_name"`
	Summary          string   `json:"summary"`
	State            string   `json:"state"`
	FirstSeen        string   `json:"first_seen"`
	LastSeen         string   `json:"last_seen"`
	Count            number   `json:"count"`
	EventIDs         []string `json:"event_ids"`
	WindowSeconds    number   `json:"window_seconds"`
	CreatedAt        string   `json:"created_at"`
	UpdatedAt        string   `json:"updated_at"`
	ResolvedAt       string   `json:"resolved_at"`
	Reason           string   `json:"reason"`
	Actor            string   `json:"actor"`
	NotifiedFiring   number   `json:"notified_firing"`
	NotifiedResolved number   `json:"notified_resolved"`
	Version          number   `json:"version"`
}

func decode(b []byte) (*Finding, error) {
	var r row
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode a findings row: %w", err)
	}
	f := &Finding{
		Fingerprint: r.Fingerprint, Detection: r.Detection, Cluster: r.Cluster, Subject: r.Subject, Scope: r.Scope,
		Severity: r.Severity, TechniqueID: r.TechniqueID, TechniqueName: r.TechniqueName, Summary: r.Summary,
		State: State(r.State), Count: uint64(r.Count), EventIDs: r.EventIDs, Window: time.Duration(r.WindowSeconds) * time.Second,
		Reason: r.Reason, Actor: r.Actor, NotifiedFiring: r.NotifiedFiring != 0, NotifiedResolved: r.NotifiedResolved != 0,
		Version: uint64(r.Version),
	}
	var err error
	for _, t := range []struct {
		dst *time.Time
		src string
	}{{&f.FirstSeen, r.FirstSeen}, {&f.LastSeen, r.LastSeen}, {&f.CreatedAt, r.CreatedAt}, {&f.UpdatedAt, r.UpdatedAt}, {&f.ResolvedAt, r.ResolvedAt}} {
		if *t.dst, err = parseTime(t.src); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC)
	if err != nil {
		return t, fmt.Errorf("%q is not a ClickHouse DateTime64: %w", s, err)
	}
	if t.Unix() == 0 {
		return time.Time{}, nil // the store's "not set"
	}
	return t, nil
}

// number decodes a ClickHouse integer written as a JSON number or a quoted one.
type number uint64

func (n *number) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseUint(strings.Trim(string(b), `"`), 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not a number: %w", b, err)
	}
	*n = number(v)
	return nil
}
