package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
)

var start = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

// injections are values that would change a query pasted together from text.
var injections = []string{
	`x' OR 1=1 --`, `x" OR "1"="1`, `{f0:String}`, `\'; DROP TABLE audit_events; --`, "nul\x00byte", `a\\b`, `*`,
}

// dataset is 800 generated requests over 400 s plus one event per injection value as name.
func dataset() []*event.Event {
	events := storetest.Realistic("gw-query", 1, 800, start)
	for i, v := range injections {
		e := storetest.Realistic("gw-query", 1000+uint64(i), 1, start.Add(time.Duration(i)*time.Second+time.Millisecond))[0]
		e.Name, e.User = v, "mallory"
		events = append(events, e)
	}
	return events
}

func all(t *testing.T, g *Engine, req Request) []*event.Event {
	t.Helper()
	var out []*event.Event
	req.PageSize = MaxPageSize
	for {
		page, next, err := g.Search(context.Background(), req)
		if err != nil {
			t.Fatalf("search %q: %v", req.Filter, err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		req.PageToken = next
	}
}

func TestFilterSelectsExactly(t *testing.T) {
	events := dataset()
	g := &Engine{Querier: openStore(t, events)}
	from, to := start.Add(-time.Minute), start.Add(time.Hour)
	cutoff := start.Add(100 * time.Second)
	for _, tc := range []struct {
		filter string
		want   func(e *event.Event) bool
	}{
		{`user = "alice@corp.example" AND resource = "secrets" AND verb:("get" "list")`, func(e *event.Event) bool {
			return e.User == "alice@corp.example" && e.Resource == "secrets" && (e.Verb == "get" || e.Verb == "list")
		}},
		{`NOT decision = "allow" OR response_code >= 404`, func(e *event.Event) bool { return e.Decision != "allow" || e.ResponseCode >= 404 }},
		{`namespace:*`, func(e *event.Event) bool { return e.Namespace != "" }},
		{`-namespace:*`, func(e *event.Event) bool { return e.Namespace == "" }},
		{`name = "secrets-*"`, func(e *event.Event) bool { return strings.HasPrefix(e.Name, "secrets-") }},
		{`groups:"ldap:corp:oncall"`, func(e *event.Event) bool { return slices.Contains(e.Groups, "ldap:corp:oncall") }},
		{`time < "` + cutoff.Format(time.RFC3339) + `" latency_ns > 25000000`, func(e *event.Event) bool {
			return e.Time.Before(cutoff) && e.Latency > 25*time.Millisecond
		}},
		{`response_code:(403 404) AND user_agent = "k9s*"`, func(e *event.Event) bool {
			return (e.ResponseCode == 403 || e.ResponseCode == 404) && strings.HasPrefix(e.UserAgent, "k9s")
		}},
		{`user:("carol" OR "dave.ops") namespace != "kube-system"`, func(e *event.Event) bool {
			return (e.User == "carol" || e.User == "dave.ops") && e.Namespace != "kube-system"
		}},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			got := ids(all(t, g, Request{From: from, To: to, Filter: tc.filter}))
			want := map[string]int{}
			for _, e := range events {
				if tc.want(e) {
					want[e.EventID]++
				}
			}
			if len(want) == 0 {
				t.Fatal("the test data has no match: the case proves nothing")
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %d events, want %d", len(got), len(want))
			}
		})
	}
	// Each injection value comes back as a plain value: exactly its own event.
	for _, v := range injections {
		got := all(t, g, Request{From: from, To: to, Filter: fmt.Sprintf(`name = %q`, v)})
		var want []string
		for _, e := range events {
			if e.Name == v || (strings.HasSuffix(v, "*") && strings.HasPrefix(e.Name, strings.TrimSuffix(v, "*"))) {
				want = append(want, e.EventID)
			}
		}
		if len(got) != len(want) || (len(got) > 0 && got[0].Name != v && v != "*") {
			t.Errorf("name = %q: %d events, want %d", v, len(got), len(want))
		}
	}
	// OnlyUser wins over a filter naming someone else.
	if got := all(t, g, Request{From: from, To: to, Filter: `user = "carol"`, OnlyUser: "mallory"}); len(got) != 0 {
		t.Errorf("OnlyUser mallory with a filter for carol returned %d events", len(got))
	}
}

func TestPaginationExactlyOnceWhileWriting(t *testing.T) {
	events := dataset()
	s := openStore(t, events)
	g := &Engine{Querier: s}
	for _, order := range []string{"", "time asc"} {
		req := Request{From: start.Add(-time.Minute), To: start.Add(time.Hour), OrderBy: order, PageSize: 37}
		seen := map[string]int{}
		var last time.Time
		for page := 0; ; page++ {
			got, next, err := g.Search(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				seen[e.EventID]++
				if !last.IsZero() && ((order == "" && e.Time.After(last)) || (order != "" && e.Time.Before(last))) {
					t.Fatalf("page %d out of order: %s after %s", page, e.Time, last)
				}
				last = e.Time
			}
			// New rows arrive between pages: at the newest end and in the middle of the range.
			more := storetest.Realistic(fmt.Sprintf("gw-new-%d", page), 1, 3, start.Add(30*time.Minute))
			more = append(more, storetest.Realistic(fmt.Sprintf("gw-mid-%d", page), 1, 2, start.Add(time.Duration(page)*time.Second))...)
			write(t, s, more, page)
			if next == "" {
				break
			}
			req.PageToken = next
		}
		for _, e := range events {
			if seen[e.EventID] != 1 {
				t.Fatalf("order %q: event %s returned %d times, want once", order, e.EventID, seen[e.EventID])
			}
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("order %q: event %s returned %d times", order, id, n)
			}
		}
	}
}

func TestPageTokenBoundToRequest(t *testing.T) {
	g := &Engine{Querier: openStore(t, dataset())}
	req := Request{From: start, To: start.Add(time.Hour), Filter: `verb = "get"`, PageSize: 5}
	_, next, err := g.Search(context.Background(), req)
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, %v", next, err)
	}
	for _, changed := range []Request{
		{From: start, To: start.Add(time.Hour), Filter: `verb = "list"`},
		{From: start, To: start.Add(2 * time.Hour), Filter: `verb = "get"`},
		{From: start, To: start.Add(time.Hour), Filter: `verb = "get"`, OnlyUser: "carol"},
		{From: start, To: start.Add(time.Hour), Filter: `verb = "get"`, OrderBy: "time asc"},
	} {
		changed.PageToken = next
		if _, _, err := g.Search(context.Background(), changed); !errors.Is(err, ErrInvalid) {
			t.Errorf("token reused with %+v: %v, want ErrInvalid", changed, err)
		}
	}
	req.PageToken, req.PageSize = next, 50 // the page size may change
	if _, _, err := g.Search(context.Background(), req); err != nil {
		t.Errorf("same request, other page size: %v", err)
	}
	req.PageToken = "garbage!"
	if _, _, err := g.Search(context.Background(), req); !errors.Is(err, ErrInvalid) {
		t.Errorf("garbage token: %v", err)
	}
}

func TestAggregateMatchesGo(t *testing.T) {
	events := dataset()
	g := &Engine{Querier: openStore(t, events)}
	got, err := g.Aggregate(context.Background(), AggregateRequest{
		From: start.Add(-time.Hour), To: start.Add(time.Hour), Filter: `decision = "allow"`,
		Bucket: 2 * time.Minute, GroupBy: []string{"user", "response_code"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, e := range events {
		if e.Decision == "allow" {
			want[fmt.Sprintf("%s|%s|%d", e.Time.Truncate(2*time.Minute).Format(time.RFC3339), e.User, e.ResponseCode)]++
		}
	}
	have := map[string]int64{}
	for _, c := range got {
		have[fmt.Sprintf("%s|%s|%s", c.Bucket.Format(time.RFC3339), c.Group["user"], c.Group["response_code"])] += c.Count
	}
	if fmt.Sprint(have) != fmt.Sprint(want) {
		t.Errorf("aggregate\n got %v\nwant %v", have, want)
	}
	for _, bad := range []AggregateRequest{
		{Bucket: time.Second}, {Bucket: 48 * time.Hour}, {Bucket: time.Minute, GroupBy: []string{"groups"}},
		{Bucket: time.Minute, GroupBy: []string{"user`; DROP"}}, {Bucket: time.Minute, GroupBy: []string{"a", "b", "c", "d"}},
	} {
		if _, err := g.Aggregate(context.Background(), bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestExportStreamsEverything(t *testing.T) {
	events := storetest.Realistic("gw-export", 1, 2500, start)
	g := &Engine{Querier: openStore(t, events), ExportChunk: 1000} // three steps, the last one short
	seen := map[string]int{}
	n, err := g.Export(context.Background(), Request{From: start, To: start.Add(time.Hour), PageSize: 3}, func(e *event.Event) error {
		seen[e.EventID]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(events)) || len(seen) != len(events) {
		t.Errorf("exported %d (%d distinct), want %d", n, len(seen), len(events))
	}
	// The decoded events are the written ones.
	got := all(t, g, Request{From: start, To: start.Add(time.Second), OrderBy: "time asc"})
	if len(got) != 2 {
		t.Fatalf("%d events in the first second, want 2", len(got))
	}
	for i, e := range got {
		if d := storetest.Diff(e, storetest.Normalize(events[i])); len(d) > 0 {
			t.Errorf("event %d: %v", i, d)
		}
	}
}

func TestTailSeesNewEvents(t *testing.T) {
	s := openStore(t, storetest.Realistic("gw-old", 1, 10, time.Now().Add(-time.Hour)))
	g := &Engine{Querier: s, TailInterval: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan *event.Event, 100)
	done := make(chan error, 1)
	go func() {
		done <- g.Tail(ctx, Request{Filter: `user = "carol"`}, func(e *event.Event) error { got <- e; return nil })
	}()
	time.Sleep(200 * time.Millisecond)
	fresh := storetest.Realistic("gw-fresh", 1, 60, time.Now())
	want := map[string]bool{}
	for _, e := range fresh {
		if e.User == "carol" {
			want[e.EventID] = true
		}
	}
	// Written in two batches, the second one older than the first (a late shipper).
	write(t, s, fresh[30:], 1)
	time.Sleep(200 * time.Millisecond)
	write(t, s, fresh[:30], 2)
	seen := map[string]int{}
	for len(seen) < len(want) {
		select {
		case e := <-got:
			if !want[e.EventID] {
				t.Fatalf("tail sent %s (%s), not a new event of carol", e.EventID, e.User)
			}
			if seen[e.EventID]++; seen[e.EventID] > 1 {
				t.Fatalf("tail sent %s twice", e.EventID)
			}
		case <-ctx.Done():
			t.Fatalf("tail saw %d of %d events", len(seen), len(want))
		}
	}
	time.Sleep(200 * time.Millisecond) // no repeats in later polls
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("tail sent %d more events", len(got))
	}
}

// A search without a range means the last 24 hours as of its first page: later pages keep
// that range even though the clock moved, and their tokens are not refused.
func TestPaginationDefaultRange(t *testing.T) {
	now := start.Add(2 * time.Hour)
	events := storetest.Realistic("gw-default", 1, 100, now.Add(-time.Hour))
	clock := now
	g := &Engine{Querier: openStore(t, events), Now: func() time.Time { clock = clock.Add(10 * time.Minute); return clock }}
	seen := map[string]int{}
	req := Request{PageSize: 30}
	for {
		page, next, err := g.Search(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			seen[e.EventID]++
		}
		if next == "" {
			break
		}
		req.PageToken = next
	}
	if len(seen) != len(events) {
		t.Errorf("saw %d events, want %d", len(seen), len(events))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s seen %d times", id, n)
		}
	}
}

// The edge cases of every column decode; fields come back as written (bodies are not
// selected, and invalid UTF-8 becomes U+FFFD on the way through JSON).
func TestSearchDecodesVariedEvents(t *testing.T) {
	events := storetest.Varied("gw-varied", 1)
	g := &Engine{Querier: openStore(t, events)}
	got := all(t, g, Request{From: time.Unix(0, 0), To: time.Date(2299, 1, 1, 0, 0, 0, 0, time.UTC), OrderBy: "time asc"})
	byID := map[string]*event.Event{}
	for _, e := range got {
		byID[e.EventID] = e
	}
	for _, w := range events {
		e, ok := byID[w.EventID]
		if !ok {
			t.Errorf("event at %s not found", w.Time)
			continue
		}
		want := storetest.Normalize(w)
		want.RequestBody, want.ResponseBody = nil, nil
		want.Name = strings.ToValidUTF8(want.Name, "\uFFFD")
		for _, d := range storetest.Diff(e, want) {
			if strings.Contains(d, "\\x") || strings.Contains(d, "\uFFFD") {
				continue // invalid UTF-8, replaced in JSON
			}
			t.Errorf("event %s: %s", w.EventID, d)
		}
	}
}

// An export with Bodies carries the recorded bodies as written; one without leaves them out.
func TestExportWithBodies(t *testing.T) {
	events := storetest.Varied("gw-bodies", 1)
	g := &Engine{Querier: openStore(t, events)}
	req := Request{From: time.Unix(0, 0), To: time.Date(2299, 1, 1, 0, 0, 0, 0, time.UTC), OrderBy: "time asc"}
	for _, bodies := range []bool{true, false} {
		req.Bodies = bodies
		got := map[string]*event.Event{}
		if _, err := g.Export(context.Background(), req, func(e *event.Event) error { got[e.EventID] = e; return nil }); err != nil {
			t.Fatal(err)
		}
		withBodies := 0
		for _, w := range events {
			e, ok := got[w.EventID]
			if !ok {
				t.Fatalf("event at %s not exported", w.Time)
			}
			wantReq, wantResp := w.RequestBody, w.ResponseBody
			if !bodies {
				wantReq, wantResp = nil, nil
			}
			if !bytes.Equal(e.RequestBody, wantReq) || !bytes.Equal(e.ResponseBody, wantResp) {
				t.Errorf("bodies=%v, event %s: bodies %.40q %.40q, want %.40q %.40q", bodies, w.EventID, e.RequestBody, e.ResponseBody, wantReq, wantResp)
			}
			if len(e.RequestBody) > 0 {
				withBodies++
			}
		}
		if bodies && withBodies == 0 {
			t.Error("no exported event has a body")
		}
	}
}
