package detect

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestDetections: on the planted data set every detection finds its planted case (the right
// subject, every planted event among the evidence) and nothing that is not about a plant; on
// the clean control set, the same history without plants, it finds nothing.
func TestDetections(t *testing.T) {
	withPlants, clean := dataSets(t)
	ctx := context.Background()
	planted := withPlants.allPlanted()
	for _, d := range Library() {
		t.Run(d.Name, func(t *testing.T) {
			plants := withPlants.plants[d.Name]
			if len(plants) == 0 {
				t.Fatalf("no case planted for %s", d.Name)
			}
			got, err := RunDetection(ctx, withPlants.store, d, windowFrom, windowTo)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range plants {
				if !slices.ContainsFunc(got, func(f Finding) bool { return f.Subject == p.subject && containsAll(f.EventIDs, p.ids) }) {
					t.Errorf("the planted case of %s (%d events) was not found; findings:\n%s", p.subject, len(p.ids), describe(got))
				}
			}
			for _, f := range got {
				if !slices.ContainsFunc(f.EventIDs, func(id string) bool { return planted[id] }) {
					t.Errorf("a finding about no planted event: %s", describe([]Finding{f}))
				}
				checkFinding(t, d, f)
			}
			t.Logf("planted set:\n%s", describe(got))

			got, err = RunDetection(ctx, clean.store, d, windowFrom, windowTo)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) > 0 {
				t.Errorf("findings on the clean control set:\n%s", describe(got))
			}
		})
	}
}

// checkFinding checks what every finding must hold.
func checkFinding(t *testing.T, d Detection, f Finding) {
	t.Helper()
	if f.Detection != d.Name || f.Severity.Rank() == 0 || f.Summary == "" || f.Count == 0 || len(f.EventIDs) == 0 {
		t.Errorf("incomplete finding: %+v", f)
	}
	if f.FirstSeen.Before(windowFrom) || !f.LastSeen.Before(windowTo) || f.LastSeen.Before(f.FirstSeen) {
		t.Errorf("finding outside the window or with last before first: %s .. %s", f.FirstSeen, f.LastSeen)
	}
}

func containsAll(have, want []string) bool {
	for _, id := range want {
		if !slices.Contains(have, id) {
			return false
		}
	}
	return true
}

func describe(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  [" + string(f.Severity) + "] " + f.Subject + ": " + f.Summary + "\n")
	}
	if b.Len() == 0 {
		return "  (none)\n"
	}
	return b.String()
}
