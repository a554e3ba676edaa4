package query

import (
	"context"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// exportChunk is the keyset step of Export: large enough to amortise a query (each one scans
// what is left of the range: 1,000 rows a step exported a day of 172,800 events three times
// slower), small enough that a chunk (about 10 MB of JSON) is all that is ever held.
const exportChunk = 10_000

// exportBodyChunk is the keyset step of an export with bodies (Request.Bodies): a recorded body
// is up to audit.maxBodyBytes (64 KiB by default) each way, and the embedded store answers a
// step in one piece, so by default a step holds at most about 130 MB of bodies.
const exportBodyChunk = 1_000

func (g *Engine) exportChunk() int {
	if g.ExportChunk > 0 {
		return g.ExportChunk
	}
	return exportChunk
}

// Export calls fn with every event of req (PageSize and PageToken are ignored), in order, a
// keyset chunk at a time: no OFFSET scans, and never more than one chunk in memory.
func (g *Engine) Export(ctx context.Context, req Request, fn func(*event.Event) error) (int64, error) {
	req.PageToken = ""
	p, err := g.plan(req)
	if err != nil {
		return 0, err
	}
	var n int64
	chunk := g.exportChunk()
	if req.Bodies {
		chunk = min(chunk, exportBodyChunk)
	}
	for {
		var last *event.Event
		rows := 0
		err := p.each(ctx, g.Querier, chunk, func(e *event.Event) error {
			rows++
			last = e
			return fn(e)
		})
		n += int64(rows)
		if err != nil {
			return n, err
		}
		if rows < chunk {
			return n, nil
		}
		p.after = &cursor{Time: last.Time, ID: last.EventID}
	}
}

// Tail calls fn with each new event matching req as it is written, oldest first, until ctx
// ends (then it returns nil). It polls every TailInterval for events since the last one seen,
// looking TailLag further back for events a shipper delivers late, and skips the ones it has
// already sent. req.From, when set, starts the tail in the past; To, OrderBy and paging are
// ignored.
func (g *Engine) Tail(ctx context.Context, req Request, fn func(*event.Event) error) error {
	interval, lag := g.TailInterval, g.TailLag
	if interval <= 0 {
		interval = time.Second
	}
	if lag <= 0 {
		lag = 30 * time.Second
	}
	start := req.From
	if start.IsZero() {
		start = g.now()
	}
	since := start                 // time of the youngest event sent, or the start
	seen := map[string]time.Time{} // ids sent that a later poll may return again
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r := req
		r.From, r.To, r.OrderBy, r.PageToken = since.Add(-lag), g.now().Add(time.Hour), "time asc", ""
		_, err := g.Export(ctx, r, func(e *event.Event) error {
			if _, dup := seen[e.EventID]; dup || e.Time.Before(start) {
				return nil
			}
			seen[e.EventID] = e.Time
			if e.Time.After(since) {
				since = e.Time
			}
			return fn(e)
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		// Forget what no poll can return any more.
		for id, at := range seen {
			if at.Before(since.Add(-lag)) {
				delete(seen, id)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
