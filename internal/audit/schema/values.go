package schema

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// FromValues is the inverse of Values: it builds an event from one row's values in Columns
// order, of the Go types Values returns. Empty slices, maps and bodies become nil, as the event
// model means "not applicable" by both.
func FromValues(vals []any) (*event.Event, error) {
	if len(vals) != len(Columns) {
		return nil, fmt.Errorf("audit row has %d values, the schema %d columns", len(vals), len(Columns))
	}
	e := &event.Event{}
	for i, c := range Columns {
		if err := set(e, c.Name, vals[i]); err != nil {
			return nil, fmt.Errorf("column %s: %w", c.Name, err)
		}
	}
	return e, nil
}

func set(e *event.Event, name string, v any) error {
	var err error
	str := func(dst *string) { *dst, err = as[string](v) }
	strs := func(dst *[]string) {
		var s []string
		if s, err = as[[]string](v); err == nil && len(s) > 0 {
			*dst = s
		}
	}
	i64 := func(dst *int64) { *dst, err = as[int64](v) }
	body := func(dst *json.RawMessage) {
		var s string
		if s, err = as[string](v); err == nil && s != "" {
			*dst = json.RawMessage(s)
		}
	}
	switch name {
	case "time":
		var t time.Time
		t, err = as[time.Time](v)
		e.Time = t.UTC()
	case "event_id":
		str(&e.EventID)
	case "kind":
		var s string
		s, err = as[string](v)
		e.Kind = event.Kind(s)
	case "stage":
		var s string
		s, err = as[string](v)
		e.Stage = event.Stage(s)
	case "cluster":
		str(&e.Cluster)
	case "gateway_instance":
		str(&e.GatewayInstance)
	case "seq":
		e.Seq, err = as[uint64](v)
	case "request_id":
		str(&e.RequestID)
	case "user":
		str(&e.User)
	case "uid":
		str(&e.UID)
	case "groups":
		strs(&e.Groups)
	case "source":
		str(&e.Source)
	case "session_id_hash":
		str(&e.SessionIDHash)
	case "impersonated_user":
		str(&e.ImpersonatedUser)
	case "impersonated_groups":
		strs(&e.ImpersonatedGroups)
	case "grant_ids":
		strs(&e.GrantIDs)
	case "source_ip":
		str(&e.SourceIP)
	case "user_agent":
		str(&e.UserAgent)
	case "verb":
		str(&e.Verb)
	case "api_group":
		str(&e.APIGroup)
	case "api_version":
		str(&e.APIVersion)
	case "resource":
		str(&e.Resource)
	case "subresource":
		str(&e.Subresource)
	case "namespace":
		str(&e.Namespace)
	case "name":
		str(&e.Name)
	case "request_uri":
		str(&e.RequestURI)
	case "method":
		str(&e.Method)
	case "response_code":
		var c uint16
		c, err = as[uint16](v)
		e.ResponseCode = int(c)
	case "decision":
		var s string
		s, err = as[string](v)
		e.Decision = event.Decision(s)
	case "latency_ns":
		var d int64
		d, err = as[int64](v)
		e.Latency = time.Duration(d)
	case "duration_ns":
		var d int64
		d, err = as[int64](v)
		e.Duration = time.Duration(d)
	case "bytes_in":
		i64(&e.BytesIn)
	case "bytes_out":
		i64(&e.BytesOut)
	case "level":
		var s string
		s, err = as[string](v)
		e.Level = event.Level(s)
	case "request_body":
		body(&e.RequestBody)
	case "response_body":
		body(&e.ResponseBody)
	case "refusal_reason":
		str(&e.RefusalReason)
	case "extra":
		var m map[string]string
		if m, err = as[map[string]string](v); err == nil && len(m) > 0 {
			e.Extra = m
		}
	default:
		return fmt.Errorf("no event field for this column: update FromValues with Columns")
	}
	return err
}

func as[T any](v any) (T, error) {
	t, ok := v.(T)
	if !ok {
		return t, fmt.Errorf("value of type %T, want %T", v, t)
	}
	return t, nil
}
