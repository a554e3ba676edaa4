package detect

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLibrary(t *testing.T) {
	lib := Library()
	if len(lib) < 11 {
		t.Errorf("%d detections, want at least 11", len(lib))
	}
	if !slices.IsSortedFunc(lib, func(a, b Detection) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("Library is not sorted by name")
	}
	kebab := regexp.MustCompile(`^[a-z]+(-[a-z]+)*$`)
	seen := map[string]bool{}
	for _, d := range lib {
		if seen[d.Name] {
			t.Errorf("two detections called %s", d.Name)
		}
		seen[d.Name] = true
		if !kebab.MatchString(d.Name) || d.Title == "" || d.Description == "" || d.Severity.Rank() == 0 || d.Query == nil {
			t.Errorf("incomplete detection: %+v", d)
		}
		if d.Technique != nil && !regexp.MustCompile(`^T\d{4}(\.\d{3})?$`).MatchString(d.Technique.ID) {
			t.Errorf("%s: technique id %q is not an ATT&CK id", d.Name, d.Technique.ID)
		}
	}
}

// recorder is a Querier that keeps what it was asked and answers with rows.
type recorder struct {
	sql    []string
	params []map[string]string
	rows   []string
	err    error
}

func (r *recorder) QueryJSON(_ context.Context, sql string, params map[string]string, each func([]byte) error) error {
	r.sql, r.params = append(r.sql, sql), append(r.params, params)
	if r.err != nil {
		return r.err
	}
	for _, row := range r.rows {
		if err := each([]byte(row)); err != nil {
			return err
		}
	}
	return nil
}

// TestQueriesBindEverything: every placeholder of every query has a value, and configured
// values reach the query only as parameters, never in its text.
func TestQueriesBindEverything(t *testing.T) {
	lib, err := Config{ProtectedNamespaces: []string{"zz-protected"}, PrivilegedRoles: []string{"zz-role'--"}}.Library()
	if err != nil {
		t.Fatal(err)
	}
	placeholder := regexp.MustCompile(`\{([a-z_]+):[^}]+\}`)
	unreplaced := regexp.MustCompile(`\$[a-z]`)
	for _, d := range lib {
		sql, params := d.Query(Window{From: windowFrom, To: windowTo})
		for _, m := range placeholder.FindAllStringSubmatch(sql, -1) {
			if _, ok := params[m[1]]; !ok {
				t.Errorf("%s: placeholder %s has no value", d.Name, m[0])
			}
		}
		if strings.Contains(sql, "zz-") || unreplaced.MatchString(sql) {
			t.Errorf("%s: a configured value or an unreplaced $name is in the query text:\n%s", d.Name, sql)
		}
		if params["from"] != "2026-11-20 00:00:00.000000" || params["to"] != "2026-11-21 00:00:00.000000" {
			t.Errorf("%s: window bound as %q .. %q", d.Name, params["from"], params["to"])
		}
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := Config{
		Database: "kaccess; DROP", ProtectedNamespaces: []string{"Kube_System", "a,b"}, PrivilegedRoles: []string{""},
		History: time.Hour, Bucket: 1500 * time.Millisecond, MinDeletes: -1,
	}.Library()
	if err == nil {
		t.Fatal("an invalid configuration was accepted")
	}
	for _, want := range []string{`database "kaccess; DROP"`, `"Kube_System"`, `"a,b"`, `privileged role ""`, "history 1h0m0s", "bucket 1.5s", "min deletes -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %s:\n%v", want, err)
		}
	}
}

func TestRunDecodesRows(t *testing.T) {
	q := &recorder{rows: []string{
		`{"cluster":"c","subject":"bob","summary":"s2","severity":"","first_seen":"2026-11-20 10:00:00.000001","last_seen":"2026-11-20 10:05:00","count":"7","event_ids":["a","b"]}`,
		`{"cluster":"c","subject":"alice","summary":"s1","severity":"critical","first_seen":"2026-11-20 09:00:00.5","last_seen":"2026-11-20 09:00:00.5","count":1,"event_ids":["c"]}`,
	}}
	got, err := Run(context.Background(), q, "mass-delete", windowFrom, windowTo)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Subject != "alice" || got[0].Severity != Critical || got[1].Severity != High ||
		got[1].Count != 7 || got[1].FirstSeen != time.Date(2026, 11, 20, 10, 0, 0, 1000, time.UTC) || got[0].Detection != "mass-delete" {
		t.Errorf("decoded %+v", got)
	}
}

func TestRunErrors(t *testing.T) {
	ctx := context.Background()
	q := &recorder{}
	if _, err := Run(ctx, q, "no-such", windowFrom, windowTo); err == nil || !strings.Contains(err.Error(), "mass-delete") {
		t.Errorf("an unknown name: %v, want an error listing the detections", err)
	}
	if _, err := Run(ctx, q, "mass-delete", windowTo, windowFrom); err == nil || !strings.Contains(err.Error(), "from must be before to") {
		t.Errorf("an empty window: %v", err)
	}
	if _, err := Run(ctx, &recorder{rows: []string{`{"first_seen":"yesterday"}`}}, "mass-delete", windowFrom, windowTo); err == nil {
		t.Error("a bad time was accepted")
	}
	boom := errors.New("boom")
	fs, err := RunAll(ctx, &recorder{err: boom}, windowFrom, windowTo)
	if len(fs) != 0 || !errors.Is(err, boom) || !strings.Contains(err.Error(), "detection unusual-hours") {
		t.Errorf("RunAll with a failing store: %v, %v", fs, err)
	}
}
