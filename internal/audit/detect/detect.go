package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Querier runs a read-only SELECT whose {name:Type} placeholders are bound to params and calls
// each with every result row as a JSON object (JSONEachRow). The embedded store
// (chdb.Store) and the ClickHouse server store implement it.
type Querier interface {
	QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error
}

// Severity ranks findings.
type Severity string

// Severities, lowest first.
const (
	Low      Severity = "low"
	Medium   Severity = "medium"
	High     Severity = "high"
	Critical Severity = "critical"
)

// Rank orders severities: 1 for Low up to 4 for Critical, 0 for anything else.
func (s Severity) Rank() int {
	return slices.Index([]Severity{Low, Medium, High, Critical}, s) + 1
}

// Technique is a MITRE ATT&CK technique (https://attack.mitre.org), e.g. T1609 Container
// Administration Command.
type Technique struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Window is the time range a detection looks at: From inclusive, To exclusive. Baselines are
// taken from before From.
type Window struct {
	From, To time.Time
}

// Detection is one named anomaly query.
type Detection struct {
	Name        string // stable, kebab-case: how API clients and the CLI ask for it
	Title       string // one line for a table
	Description string // what it looks for, the baseline it compares with, what may explain it
	Severity    Severity
	Technique   *Technique // nil where no ATT&CK technique fits
	// Query returns the SQL and its parameters for a window. Each row must have the columns
	// cluster, subject, summary, first_seen, last_seen, count and event_ids, and may have
	// severity (empty keeps the detection's own) and scope (what, besides cluster and subject,
	// the query groups by: one finding per cluster, subject and scope).
	Query func(w Window) (sql string, params map[string]string)
}

// Finding is one thing a detection points at.
type Finding struct {
	Detection string   `json:"detection"`
	Severity  Severity `json:"severity"`
	Cluster   string   `json:"cluster"`
	Subject   string   `json:"subject"` // the user, or the source IP when there is no user
	// Scope tells findings of one detection and subject apart where a detection groups by
	// more (a namespace, a source IP, an attribute); empty where subject alone is the key.
	Scope     string    `json:"scope,omitempty"`
	Summary   string    `json:"summary"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     uint64    `json:"count"`     // events (or requests) behind the finding
	EventIDs  []string  `json:"event_ids"` // evidence, earliest first, capped at Config.MaxEvidence
}

// Library returns the detections with the default configuration, sorted by name.
func Library() []Detection {
	lib, err := Config{}.Library()
	if err != nil {
		panic("detect: the default configuration is invalid: " + err.Error()) // a bug, caught by the tests
	}
	return lib
}

// Names returns the names of the detections of Library.
func Names() []string {
	var names []string
	for _, d := range Library() {
		names = append(names, d.Name)
	}
	return names
}

// Run runs the detection called name from Library over [from, to).
func Run(ctx context.Context, q Querier, name string, from, to time.Time) ([]Finding, error) {
	for _, d := range Library() {
		if d.Name == name {
			return RunDetection(ctx, q, d, from, to)
		}
	}
	return nil, fmt.Errorf("no detection called %q; the detections are: %s", name, strings.Join(Names(), ", "))
}

// RunAll runs every detection of Library over [from, to). A failing detection does not stop
// the others: the findings of those that ran come back with an error naming each that failed.
func RunAll(ctx context.Context, q Querier, from, to time.Time) ([]Finding, error) {
	return RunEach(ctx, q, Library(), from, to)
}

// RunEach runs detections (e.g. from Config.Library) over [from, to), as RunAll does.
func RunEach(ctx context.Context, q Querier, detections []Detection, from, to time.Time) ([]Finding, error) {
	var all []Finding
	var errs []error
	for _, d := range detections {
		fs, err := RunDetection(ctx, q, d, from, to)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		all = append(all, fs...)
	}
	return all, errors.Join(errs...)
}

// maxFindings bounds what one detection returns: past this many findings the detection is
// not telling anyone anything, and the result must stay small enough to hold in memory.
const maxFindings = 1000

// RunDetection runs d over [from, to). Findings come back ordered by first_seen, subject.
func RunDetection(ctx context.Context, q Querier, d Detection, from, to time.Time) ([]Finding, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("detection %s: the window [%s, %s) is empty: from must be before to",
			d.Name, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	sql, params := d.Query(Window{From: from.UTC(), To: to.UTC()})
	var out []Finding
	err := q.QueryJSON(ctx, sql, params, func(b []byte) error {
		var r row
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("decode a result row %.200s: %w", b, err)
		}
		f, err := r.finding(d)
		if err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("detection %s: %w", d.Name, err)
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if c := a.FirstSeen.Compare(b.FirstSeen); c != 0 {
			return c
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	return out, nil
}

// row is one result row of a detection query.
type row struct {
	Cluster   string   `json:"cluster"`
	Subject   string   `json:"subject"`
	Scope     string   `json:"scope"`
	Summary   string   `json:"summary"`
	Severity  string   `json:"severity"`
	FirstSeen string   `json:"first_seen"`
	LastSeen  string   `json:"last_seen"`
	Count     number   `json:"count"`
	EventIDs  []string `json:"event_ids"`
}

func (r row) finding(d Detection) (Finding, error) {
	f := Finding{
		Detection: d.Name, Severity: d.Severity, Cluster: r.Cluster, Subject: r.Subject, Scope: r.Scope,
		Summary: r.Summary, Count: uint64(r.Count), EventIDs: r.EventIDs,
	}
	if r.Severity != "" {
		f.Severity = Severity(r.Severity)
	}
	var err error
	if f.FirstSeen, err = parseTime(r.FirstSeen); err != nil {
		return f, fmt.Errorf("first_seen: %w", err)
	}
	if f.LastSeen, err = parseTime(r.LastSeen); err != nil {
		return f, fmt.Errorf("last_seen: %w", err)
	}
	return f, nil
}

// timeLayout is how ClickHouse writes a DateTime64(6) in JSON, and how window bounds are bound
// to {from:DateTime64(6, 'UTC')} parameters.
const timeLayout = "2006-01-02 15:04:05.000000"

func parseTime(s string) (time.Time, error) {
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC)
	if err != nil {
		return t, fmt.Errorf("%q is not a ClickHouse DateTime64: %w", s, err)
	}
	return t, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// number decodes a UInt64 that ClickHouse writes either as a JSON number or, with
// output_format_json_quote_64bit_integers (on by default in some versions), as a string.
type number uint64

func (n *number) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseUint(strings.Trim(string(b), `"`), 10, 64)
	if err != nil {
		return fmt.Errorf("count %s is not a number: %w", b, err)
	}
	*n = number(v)
	return nil
}
