package query

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Aggregate limits.
const (
	MinBucket    = time.Minute
	MaxBucket    = 24 * time.Hour
	MaxGroupBy   = 3
	MaxAggregate = 10000 // result rows
)

// AggregateRequest counts events per time bucket and group.
type AggregateRequest struct {
	From, To time.Time
	Filter   string
	OnlyUser string
	Bucket   time.Duration // 1m..24h, whole minutes
	GroupBy  []string      // up to MaxGroupBy of FieldNames (scalar fields)
}

// Count is one bucket and group of an aggregate.
type Count struct {
	Bucket time.Time         // start of the bucket
	Group  map[string]string // group field -> value (numbers in decimal)
	Count  int64
}

// Aggregate returns the counts, ordered by bucket then group values.
func (g *Engine) Aggregate(ctx context.Context, req AggregateRequest) ([]Count, error) {
	if req.Bucket < MinBucket || req.Bucket > MaxBucket || req.Bucket%time.Minute != 0 {
		return nil, fmt.Errorf("%w: bucket %s: use whole minutes from %s to %s", ErrInvalid, req.Bucket, MinBucket, MaxBucket)
	}
	if len(req.GroupBy) > MaxGroupBy {
		return nil, fmt.Errorf("%w: %d group_by fields, at most %d", ErrInvalid, len(req.GroupBy), MaxGroupBy)
	}
	cols := []string{"toStartOfInterval(`time`, INTERVAL " + strconv.Itoa(int(req.Bucket/time.Second)) + " SECOND) AS `bucket`"}
	keys := []string{"`bucket`"}
	for i, f := range req.GroupBy {
		if !groupable(f) {
			return nil, fmt.Errorf("%w: group_by %q: expected one of the single-valued fields %s", ErrInvalid, f, knownFields())
		}
		if slices.Contains(req.GroupBy[:i], f) {
			return nil, fmt.Errorf("%w: group_by names %q twice", ErrInvalid, f)
		}
		// The name comes from the declared fields, never from the request: f was looked up.
		cols = append(cols, quoteIdent(fields[f].Name))
		keys = append(keys, quoteIdent(fields[f].Name))
	}
	p, err := g.plan(Request{From: req.From, To: req.To, Filter: req.Filter, OnlyUser: req.OnlyUser})
	if err != nil {
		return nil, err
	}
	sql := "SELECT " + strings.Join(cols, ", ") + ", count() AS `count` FROM " + p.table + " WHERE " + p.where +
		" GROUP BY " + strings.Join(keys, ", ") + " ORDER BY " + strings.Join(keys, ", ") + " LIMIT " + strconv.Itoa(MaxAggregate+1) + p.settings
	var out []Count
	err = g.Querier.QueryJSON(ctx, sql, p.args, func(b []byte) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("decode an aggregate row: %w", err)
		}
		var c Count
		var bucket string
		if err := json.Unmarshal(m["bucket"], &bucket); err != nil {
			return fmt.Errorf("aggregate bucket: %w", err)
		}
		if c.Bucket, err = parseTime(bucket); err != nil {
			return err
		}
		var n jsonInt
		if err := n.UnmarshalJSON(m["count"]); err != nil {
			return fmt.Errorf("aggregate count: %w", err)
		}
		c.Count = int64(n)
		c.Group = make(map[string]string, len(req.GroupBy))
		for _, f := range req.GroupBy {
			c.Group[f] = rawText(m[f])
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > MaxAggregate {
		return nil, fmt.Errorf("%w: more than %d buckets and groups: use a larger bucket, fewer group_by fields or a narrower filter", ErrInvalid, MaxAggregate)
	}
	return out, nil
}

// rawText is a JSON string's text, or a number's digits.
func rawText(b json.RawMessage) string {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return s
	}
	return string(b)
}
