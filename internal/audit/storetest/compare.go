package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Precision is the time resolution every store keeps (microseconds, as Kubernetes' audit).
const precision = 1000 // ns

// Normalize returns the event as a store gives it back: time in UTC at microsecond precision,
// and nil for empty slices, maps and bodies (the store has no NULLs; empty means "not set").
func Normalize(e *event.Event) *event.Event {
	c := *e
	c.Time = c.Time.UTC().Truncate(precision)
	c.Groups = nilIfEmpty(c.Groups)
	c.ImpersonatedGroups = nilIfEmpty(c.ImpersonatedGroups)
	c.GrantIDs = nilIfEmpty(c.GrantIDs)
	if len(c.Extra) == 0 {
		c.Extra = nil
	}
	if len(c.RequestBody) == 0 {
		c.RequestBody = nil
	}
	if len(c.ResponseBody) == 0 {
		c.ResponseBody = nil
	}
	return &c
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// assertEvents fails unless got holds exactly want (normalized), in order, naming every field
// that differs.
func assertEvents(t *testing.T, got, want []*event.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("stored %d events, want %d", len(got), len(want))
	}
	bad := 0
	for i := range min(len(got), len(want)) {
		w, g := Normalize(want[i]), Normalize(got[i])
		for _, d := range Diff(g, w) {
			t.Errorf("event %d (seq %d): %s", i, w.Seq, d)
			if bad++; bad > 20 {
				t.Fatal("too many differences")
			}
		}
	}
}

// Diff lists the fields in which got differs from want, one line each.
func Diff(got, want *event.Event) []string {
	var out []string
	gv, wv := reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem()
	for i := range gv.NumField() {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			out = append(out, fmt.Sprintf("%s = %s, want %s", gv.Type().Field(i).Name, show(g), show(w)))
		}
	}
	return out
}

func show(v any) string {
	var s string
	switch v := v.(type) {
	case json.RawMessage:
		s = fmt.Sprintf("%q", []byte(v))
	default:
		s = fmt.Sprintf("%#v", v)
	}
	if len(s) > 200 {
		s = s[:200] + fmt.Sprintf("... (%d chars)", len(s))
	}
	return s
}
