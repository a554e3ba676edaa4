package query

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Usage limits. A summary that does not fit is an error, never a part: a least-privilege
// review of a part would propose removing rights that were used.
const (
	MaxUsageWindow = 400 * 24 * time.Hour
	MaxUsageRows   = 200000
)

// UsageRequest asks what was done with the access people have: the allowed requests in
// [From, To), on Cluster ("" for every cluster).
type UsageRequest struct {
	From, To time.Time
	Cluster  string
	// MaxRows bounds the distinct kinds of request returned; default and at most MaxUsageRows.
	MaxRows int
}

// Usage is one kind of request and how many of it there were.
type Usage struct {
	User                  string
	Groups                []string // the user's own
	ImpersonatedGroups    []string // what the gateway impersonated (grant groups included)
	Verb, APIGroup        string
	Resource, Subresource string
	Namespace             string
	GrantIDs              []string // the access grants in force for the request
	Count                 int64
}

// Usage summarizes the allowed requests of a window: who, with which groups, did which verb on
// which resource in which namespace, how often. Refused and failed requests used no right and
// are left out; a long-running request (watch, exec) counts once, at its start.
func (g *Engine) Usage(ctx context.Context, req UsageRequest) ([]Usage, error) {
	if req.From.IsZero() || req.To.IsZero() || !req.From.Before(req.To) {
		return nil, fmt.Errorf("%w: the review window needs a start before its end", ErrInvalid)
	}
	if req.To.Sub(req.From) > MaxUsageWindow {
		return nil, fmt.Errorf("%w: the review window is %s, at most %d days", ErrInvalid, req.To.Sub(req.From).Round(time.Hour), int(MaxUsageWindow/(24*time.Hour)))
	}
	limit := req.MaxRows
	if limit <= 0 || limit > MaxUsageRows {
		limit = MaxUsageRows
	}
	args := map[string]string{
		"from": formatTime(req.From), "to": formatTime(req.To), "kind": string(event.KindRequest),
		"decision": string(event.DecisionAllow), "complete": string(event.StageComplete), "started": string(event.StageStarted),
	}
	where := "`time` >= {from:" + timeType + "} AND `time` < {to:" + timeType + "} AND `kind` = {kind:String}" +
		" AND `decision` = {decision:String} AND `stage` IN ({complete:String}, {started:String}) AND `resource` != ''"
	if req.Cluster != "" {
		args["cluster"] = req.Cluster
		where += " AND `cluster` = {cluster:String}"
	}
	keys := "`user`, `groups`, `impersonated_groups`, `verb`, `api_group`, `resource`, `subresource`, `namespace`, `grant_ids`"
	sql := "SELECT " + keys + ", count() AS `count` FROM " + table(g.Database) + " WHERE " + where +
		" GROUP BY " + keys + " ORDER BY " + keys + " LIMIT " + strconv.Itoa(limit+1) + g.settings()
	var out []Usage
	err := g.Querier.QueryJSON(ctx, sql, args, func(b []byte) error {
		var r struct {
			User               string   `json:"user"`
			Groups             []string `json:"groups"`
			ImpersonatedGroups []string `json:"impersonated_groups"`
			Verb               string   `json:"verb"`
			APIGroup           string   `json:"api_group"`
			Resource           string   `json:"resource"`
			Subresource        string   `json:"subresource"`
			Namespace          string   `json:"namespace"`
			GrantIDs           []string `json:"grant_ids"`
			Count              jsonInt  `json:"count"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("decode a usage row: %w", err)
		}
		out = append(out, Usage{
			User: r.User, Groups: r.Groups, ImpersonatedGroups: r.ImpersonatedGroups, Verb: r.Verb, APIGroup: r.APIGroup,
			Resource: r.Resource, Subresource: r.Subresource, Namespace: r.Namespace, GrantIDs: r.GrantIDs, Count: int64(r.Count),
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: more than %d distinct kinds of request in the window: review a shorter window", ErrInvalid, limit)
	}
	return out, nil
}

// GrantElevations maps the access grants that started in [from, to) to their elevations, from
// the grant events internal/access records (extra grant_id and elevation). A review passes a
// from early enough to cover grants still in force at the start of its window.
func (g *Engine) GrantElevations(ctx context.Context, from, to time.Time) (map[string]string, error) {
	if from.IsZero() || to.IsZero() || !from.Before(to) {
		return nil, fmt.Errorf("%w: the grants window needs a start before its end", ErrInvalid)
	}
	args := map[string]string{"from": formatTime(from), "to": formatTime(to), "kind": string(event.KindGrant)}
	sql := "SELECT `extra`['grant_id'] AS `grant_id`, any(`extra`['elevation']) AS `elevation` FROM " + table(g.Database) +
		" WHERE `time` >= {from:" + timeType + "} AND `time` < {to:" + timeType + "} AND `kind` = {kind:String}" +
		" GROUP BY `grant_id` ORDER BY `grant_id` LIMIT " + strconv.Itoa(MaxUsageRows+1) + g.settings()
	out := map[string]string{}
	err := g.Querier.QueryJSON(ctx, sql, args, func(b []byte) error {
		var r struct {
			GrantID   string `json:"grant_id"`
			Elevation string `json:"elevation"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("decode a grant row: %w", err)
		}
		if r.GrantID != "" {
			out[r.GrantID] = r.Elevation
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > MaxUsageRows {
		return nil, fmt.Errorf("%w: more than %d grants in the window: review a shorter window", ErrInvalid, MaxUsageRows)
	}
	return out, nil
}
