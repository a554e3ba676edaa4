package query

import (
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

func usageKey(user string, groups, imp []string, verb, group, res, sub, ns string, grants []string) string {
	return fmt.Sprintf("%s|%v|%v|%s|%s|%s|%s|%s|%v", user, groups, imp, verb, group, res, sub, ns, grants)
}

// TestUsageSummarizesAllowedRequests: the store's summary is exactly the one computed here
// from the events written: allowed requests only, in the window and cluster, a watch once.
func TestUsageSummarizesAllowedRequests(t *testing.T) {
	events := storetest.Realistic("gw-usage", 1, 600, start)
	for i, e := range events {
		if i%5 == 0 {
			e.Cluster = "other"
		}
		if i%7 == 0 {
			e.Subresource = "log"
		}
		if i%11 == 0 {
			e.ImpersonatedGroups, e.GrantIDs = []string{"kaccess:grant:x"}, []string{"x"}
		}
	}
	// A watch: recorded when it starts and when it ends; it counts once.
	w := storetest.Realistic("gw-usage", 5000, 1, start.Add(time.Second))[0]
	w.User, w.Verb, w.Stage = "watcher", "watch", event.StageStarted
	w.SetResponse(200)
	end := *w
	end.EventID, end.Stage = event.NewID(), event.StageEnded
	// Not requests, or outside the window.
	login := event.New(event.KindLogin, start.Add(time.Second))
	login.User, login.Cluster = "alice@corp.example", "prod-eu-1"
	late := storetest.Realistic("gw-usage", 6000, 1, start.Add(2*time.Hour))[0]
	// A cluster name that would break a pasted statement.
	odd := storetest.Realistic("gw-usage", 7000, 1, start.Add(time.Second))[0]
	odd.Cluster = `x' OR 1=1 --`
	odd.SetResponse(200)
	all := append(events, w, &end, login, late, odd)
	g := &Engine{Querier: openStore(t, all)}
	from, to := start.Add(-time.Minute), start.Add(time.Hour)

	want := map[string]int64{}
	for _, e := range all {
		if e.Kind != event.KindRequest || e.Decision != event.DecisionAllow || e.Cluster != "prod-eu-1" ||
			e.Stage == event.StageEnded || e.Time.Before(from) || !e.Time.Before(to) {
			continue
		}
		want[usageKey(e.User, e.Groups, e.ImpersonatedGroups, e.Verb, e.APIGroup, e.Resource, e.Subresource, e.Namespace, e.GrantIDs)]++
	}
	got, err := g.Usage(context.Background(), UsageRequest{From: from, To: to, Cluster: "prod-eu-1"})
	if err != nil {
		t.Fatal(err)
	}
	gotMap := map[string]int64{}
	for _, u := range got {
		gotMap[usageKey(u.User, nilIfEmpty(u.Groups), nilIfEmpty(u.ImpersonatedGroups), u.Verb, u.APIGroup, u.Resource, u.Subresource, u.Namespace, nilIfEmpty(u.GrantIDs))] += u.Count
	}
	if len(want) < 50 {
		t.Fatalf("the data set has only %d kinds of allowed request", len(want))
	}
	for k, n := range want {
		if gotMap[k] != n {
			t.Errorf("%s: count %d, want %d", k, gotMap[k], n)
		}
	}
	for k := range gotMap {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: not an allowed request of the window", k)
		}
	}
	if !slices.ContainsFunc(got, func(u Usage) bool { return u.User == "watcher" && u.Count == 1 }) {
		t.Error("the watch is missing or counted twice")
	}

	odds, err := g.Usage(context.Background(), UsageRequest{From: from, To: to, Cluster: odd.Cluster})
	if err != nil {
		t.Fatal(err)
	}
	if len(odds) != 1 || odds[0].Count != 1 {
		t.Errorf("cluster %q: got %+v, want its one request", odd.Cluster, odds)
	}
}

func TestUsageIsBounded(t *testing.T) {
	g := &Engine{Querier: openStore(t, storetest.Realistic("gw-usage-b", 1, 200, start))}
	from, to := start.Add(-time.Minute), start.Add(time.Hour)
	for _, tc := range []struct {
		name string
		req  UsageRequest
		want string
	}{
		{"too many rows", UsageRequest{From: from, To: to, MaxRows: 3}, "more than 3 distinct"},
		{"window too long", UsageRequest{From: to.Add(-MaxUsageWindow - time.Hour), To: to}, "at most 400 days"},
		{"empty window", UsageRequest{From: to, To: to}, "start before its end"},
		{"no start", UsageRequest{To: to}, "start before its end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.Usage(context.Background(), tc.req)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}

func TestGrantElevations(t *testing.T) {
	grant := func(id, elevation string, at time.Time) *event.Event {
		e := event.New(event.KindGrant, at)
		e.User, e.Name, e.GrantIDs = "alice", id, []string{id}
		e.Extra = map[string]string{"grant_id": id, "elevation": elevation, "request": id}
		return e
	}
	req := event.New(event.KindAccessRequest, start) // not a grant
	req.Extra = map[string]string{"grant_id": "pending-1", "elevation": "db"}
	g := &Engine{Querier: openStore(t, []*event.Event{
		grant("db-1", "db", start), grant("bg-1", "break-glass", start.Add(time.Minute)),
		grant(`x' OR 1=1 --`, "odd", start.Add(2*time.Minute)), grant("late-1", "db", start.Add(3*time.Hour)), req,
	})}
	got, err := g.GrantElevations(context.Background(), start.Add(-time.Hour), start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"db-1": "db", "bg-1": "break-glass", `x' OR 1=1 --`: "odd"}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if _, err := g.GrantElevations(context.Background(), start, start); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty window: %v", err)
	}
}
