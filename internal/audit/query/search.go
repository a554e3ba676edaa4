package query

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Page sizes (AIP-158).
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Engine runs queries on one audit store. The zero Database means schema.DefaultDatabase.
type Engine struct {
	Querier  Querier
	Database string
	// Now is the clock of Tail; default time.Now.
	Now func() time.Time
	// TailInterval is how often Tail polls; default one second.
	TailInterval time.Duration
	// TailLag is how far back each Tail poll looks, for events the shipper delivers after
	// younger ones; default 30 seconds.
	TailLag time.Duration
	// ExportChunk is how many rows each keyset step of Export (and Tail) reads; default
	// 10,000.
	ExportChunk int
	// MaxExecution bounds each statement on the store (max_execution_time), so one broad
	// search cannot hold the store; default 30 seconds.
	MaxExecution time.Duration
}

// settings is the SETTINGS clause every statement carries.
func (g *Engine) settings() string {
	d := g.MaxExecution
	if d <= 0 {
		d = 30 * time.Second
	}
	return " SETTINGS max_execution_time = " + strconv.Itoa(max(1, int(d/time.Second)))
}

// Request is a search.
type Request struct {
	From, To time.Time // [From, To); a zero To means now, a zero From 24 hours before To
	Filter   string    // AIP-160 over FieldNames
	OrderBy  string    // "time desc" (default) or "time asc"
	// OnlyUser restricts the search to one user's events whatever the filter says (callers who
	// may see only their own). It is bound as a parameter like any filter value.
	OnlyUser  string
	PageSize  int
	PageToken string
	// Bodies also reads the recorded (redacted) request and response bodies, for exports of
	// whole records such as the Kubernetes audit format; searches and tails leave them out.
	Bodies bool
}

// Search returns one page of events and the token of the next page ("" on the last one).
func Search(ctx context.Context, q Querier, req Request) ([]*event.Event, string, error) {
	return (&Engine{Querier: q}).Search(ctx, req)
}

// Search returns one page of events and the token of the next page ("" on the last one).
func (g *Engine) Search(ctx context.Context, req Request) ([]*event.Event, string, error) {
	p, err := g.plan(req)
	if err != nil {
		return nil, "", err
	}
	size := req.PageSize
	switch {
	case size < 0:
		return nil, "", fmt.Errorf("%w: page_size %d is negative", ErrInvalid, size)
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	// One row more than asked tells whether there is a next page.
	events, err := p.page(ctx, g.Querier, size+1)
	if err != nil {
		return nil, "", err
	}
	if len(events) <= size {
		return events, "", nil
	}
	events = events[:size]
	last := events[size-1]
	return events, p.token(last), nil
}

// plan is a search prepared for one or more pages.
type plan struct {
	table    string
	columns  string // selectColumns, or bodyColumns
	where    string
	args     map[string]string
	asc      bool
	settings string
	hash     [8]byte // of the parameters a page token must be used with
	from, to time.Time
	after    *cursor
}

type cursor struct {
	Time time.Time
	ID   string
}

func (g *Engine) plan(req Request) (*plan, error) {
	var asc bool
	switch strings.Join(strings.Fields(strings.ToLower(req.OrderBy)), " ") {
	case "", "time desc":
	case "time", "time asc":
		asc = true
	default:
		return nil, fmt.Errorf(`%w: order_by %q: use "time desc" (the default) or "time asc"`, ErrInvalid, req.OrderBy)
	}
	w, err := Compile(req.Filter, "f")
	if err != nil {
		return nil, err
	}
	p := &plan{table: table(g.Database), columns: selectColumns, args: w.Params, asc: asc, settings: g.settings()}
	if req.Bodies {
		p.columns = bodyColumns
	}
	// The hash covers the request as asked, so a default range ("the last 24 hours") stays the
	// same request on every page; the token carries the range the first page resolved it to.
	h := sha256.New()
	for _, s := range []string{rawTime(req.From), rawTime(req.To), req.Filter, strconv.FormatBool(asc), req.OnlyUser, g.Database} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	copy(p.hash[:], h.Sum(nil))
	if req.PageToken != "" {
		if err := p.resume(req.PageToken); err != nil {
			return nil, err
		}
	} else {
		p.to = req.To
		if p.to.IsZero() {
			p.to = g.now()
		}
		p.from = req.From
		if p.from.IsZero() {
			p.from = p.to.Add(-24 * time.Hour)
		}
	}
	if !p.from.Before(p.to) {
		return nil, fmt.Errorf("%w: the time range is empty: from %s is not before to %s", ErrInvalid, p.from.Format(time.RFC3339), p.to.Format(time.RFC3339))
	}
	p.args["from"], p.args["to"] = formatTime(p.from), formatTime(p.to)
	conds := []string{"`time` >= {from:" + timeType + "}", "`time` < {to:" + timeType + "}", w.SQL}
	if req.OnlyUser != "" {
		p.args["only_user"] = req.OnlyUser
		conds = append(conds, "`user` = {only_user:String}")
	}
	p.where = strings.Join(conds, " AND ")
	return p, nil
}

func rawTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

// tokenBody is what a page token holds: where the last page ended and the request it belongs to.
type tokenBody struct {
	T    int64  `json:"t"` // microseconds since the epoch (the store's precision)
	I    string `json:"i"`
	H    []byte `json:"h"`
	From int64  `json:"f"` // the range of the first page, in microseconds
	To   int64  `json:"u"`
}

func (p *plan) token(last *event.Event) string {
	b, _ := json.Marshal(tokenBody{T: last.Time.UnixMicro(), I: last.EventID, H: p.hash[:], From: p.from.UnixMicro(), To: p.to.UnixMicro()})
	return base64.RawURLEncoding.EncodeToString(b)
}

func (p *plan) resume(token string) error {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	var tb tokenBody
	if err == nil {
		err = json.Unmarshal(raw, &tb)
	}
	if err != nil {
		return fmt.Errorf("%w: page_token is not one this server issued: start again without it", ErrInvalid)
	}
	if len(tb.H) != len(p.hash) || binary.BigEndian.Uint64(tb.H) != binary.BigEndian.Uint64(p.hash[:]) {
		return fmt.Errorf("%w: page_token belongs to a search with other parameters (range, filter or order): "+
			"keep them unchanged across pages, or start again without a token", ErrInvalid)
	}
	p.after = &cursor{Time: time.UnixMicro(tb.T).UTC(), ID: tb.I}
	p.from, p.to = time.UnixMicro(tb.From).UTC(), time.UnixMicro(tb.To).UTC()
	return nil
}

// page runs one keyset step: rows after p.after, at most limit of them.
func (p *plan) page(ctx context.Context, q Querier, limit int) ([]*event.Event, error) {
	var events []*event.Event
	err := p.each(ctx, q, limit, func(e *event.Event) error {
		events = append(events, e)
		return nil
	})
	return events, err
}

func (p *plan) each(ctx context.Context, q Querier, limit int, fn func(*event.Event) error) error {
	where, dir, cmp := p.where, "DESC", "<"
	if p.asc {
		dir, cmp = "ASC", ">"
	}
	args := p.args
	if p.after != nil {
		args = make(map[string]string, len(p.args)+2)
		for k, v := range p.args {
			args[k] = v
		}
		args["after_time"], args["after_id"] = formatTime(p.after.Time), p.after.ID
		where += " AND (`time`, `event_id`) " + cmp + " ({after_time:" + timeType + "}, {after_id:String})"
	}
	sql := "SELECT " + p.columns + " FROM " + p.table + " WHERE " + where +
		" ORDER BY `time` " + dir + ", `event_id` " + dir + " LIMIT " + strconv.Itoa(limit) + p.settings
	return q.QueryJSON(ctx, sql, args, func(b []byte) error {
		e, err := decodeEvent(b)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

func (g *Engine) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}
