package query

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// selectColumns are the columns a search returns: all but the bodies, which can be megabytes
// each and belong to a look at one event, not to a page of them. bodyColumns are selectColumns
// and the bodies, for exports of whole records (Request.Bodies).
var selectColumns, bodyColumns = func() (string, string) {
	var cols []string
	for _, c := range schema.Columns {
		if c.Name == "request_body" || c.Name == "response_body" {
			continue
		}
		cols = append(cols, quoteIdent(c.Name))
	}
	return strings.Join(cols, ", "), strings.Join(append(cols, quoteIdent("request_body"), quoteIdent("response_body")), ", ")
}()

// row is one JSONEachRow object of selectColumns. Numbers are jsonInt because ClickHouse quotes
// 64-bit integers in JSON by default (output_format_json_quote_64bit_integers).
type row struct {
	Time               jsonTime          `json:"time"`
	EventID            string            `json:"event_id"`
	Kind               string            `json:"kind"`
	Stage              string            `json:"stage"`
	Cluster            string            `json:"cluster"`
	GatewayInstance    string            `json:"gateway_instance"`
	Seq                jsonInt           `json:"seq"`
	RequestID          string            `json:"request_id"`
	User               string            `json:"user"`
	UID                string            `json:"uid"`
	Groups             []string          `json:"groups"`
	Source             string            `json:"source"`
	SessionIDHash      string            `json:"session_id_hash"`
	ImpersonatedUser   string            `json:"impersonated_user"`
	ImpersonatedGroups []string          `json:"impersonated_groups"`
	GrantIDs           []string          `json:"grant_ids"`
	SourceIP           string            `json:"source_ip"`
	UserAgent          string            `json:"user_agent"`
	Verb               string            `json:"verb"`
	APIGroup           string            `json:"api_group"`
	APIVersion         string            `json:"api_version"`
	Resource           string            `json:"resource"`
	Subresource        string            `json:"subresource"`
	Namespace          string            `json:"namespace"`
	Name               string            `json:"name"`
	RequestURI         string            `json:"request_uri"`
	Method             string            `json:"method"`
	ResponseCode       jsonInt           `json:"response_code"`
	Decision           string            `json:"decision"`
	LatencyNS          jsonInt           `json:"latency_ns"`
	DurationNS         jsonInt           `json:"duration_ns"`
	BytesIn            jsonInt           `json:"bytes_in"`
	BytesOut           jsonInt           `json:"bytes_out"`
	Level              string            `json:"level"`
	Extra              map[string]string `json:"extra"`
	RefusalReason      string            `json:"refusal_reason"`
	RequestBody        string            `json:"request_body"`  // only with bodyColumns
	ResponseBody       string            `json:"response_body"` // only with bodyColumns
}

// decodeEvent maps one JSON row back to an event. Empty slices and maps become nil, as the
// event model means "not applicable" by both.
func decodeEvent(b []byte) (*event.Event, error) {
	var r row
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode an audit row: %w", err)
	}
	e := &event.Event{
		Time: time.Time(r.Time), EventID: r.EventID, Kind: event.Kind(r.Kind), Stage: event.Stage(r.Stage),
		Cluster: r.Cluster, GatewayInstance: r.GatewayInstance, Seq: uint64(r.Seq), RequestID: r.RequestID,
		User: r.User, UID: r.UID, Groups: nilIfEmpty(r.Groups), Source: r.Source, SessionIDHash: r.SessionIDHash,
		ImpersonatedUser: r.ImpersonatedUser, ImpersonatedGroups: nilIfEmpty(r.ImpersonatedGroups),
		GrantIDs: nilIfEmpty(r.GrantIDs), SourceIP: r.SourceIP, UserAgent: r.UserAgent,
		Verb: r.Verb, APIGroup: r.APIGroup, APIVersion: r.APIVersion, Resource: r.Resource,
		Subresource: r.Subresource, Namespace: r.Namespace, Name: r.Name, RequestURI: r.RequestURI,
		Method: r.Method, ResponseCode: int(r.ResponseCode), Decision: event.Decision(r.Decision),
		Latency: time.Duration(r.LatencyNS), Duration: time.Duration(r.DurationNS),
		BytesIn: int64(r.BytesIn), BytesOut: int64(r.BytesOut), Level: event.Level(r.Level),
		RefusalReason: r.RefusalReason,
	}
	if len(r.Extra) > 0 {
		e.Extra = r.Extra
	}
	if r.RequestBody != "" {
		e.RequestBody = json.RawMessage(r.RequestBody)
	}
	if r.ResponseBody != "" {
		e.ResponseBody = json.RawMessage(r.ResponseBody)
	}
	return e, nil
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// jsonInt reads a JSON number or a quoted one.
type jsonInt int64

func (n *jsonInt) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(string(bytes.Trim(b, `"`)), 10, 64)
	if err != nil {
		u, uerr := strconv.ParseUint(string(bytes.Trim(b, `"`)), 10, 64)
		if uerr != nil {
			return fmt.Errorf("not an integer: %s", b)
		}
		v = int64(u)
	}
	*n = jsonInt(v)
	return nil
}

// jsonTime reads ClickHouse's DateTime64 text ("2026-11-24 09:30:15.123456", UTC) or RFC 3339.
type jsonTime time.Time

func (t *jsonTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	v, err := parseTime(s)
	if err != nil {
		return err
	}
	*t = jsonTime(v)
	return nil
}

func parseTime(s string) (time.Time, error) {
	if v, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC); err == nil {
		return v, nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: neither ClickHouse nor RFC 3339 form", s)
	}
	return v.UTC(), nil
}
