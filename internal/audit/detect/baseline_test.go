package detect

import (
	"context"
	"slices"
	"testing"
)

// TestBaselines shows that what keeps the clean set quiet is each subject's own history, not
// a list of names: on the first day of the data, with no history before it, the CI deployer's
// nightly refusals and cert-manager's cluster-wide secret watch are findings; in the window,
// after two weeks of the same, they are not (TestDetections). Users without enough history
// are not judged on hours and sources at all.
func TestBaselines(t *testing.T) {
	_, clean := dataSets(t)
	ctx := context.Background()
	day0 := windowFrom.AddDate(0, 0, -historyDays)
	day1 := day0.AddDate(0, 0, 1)
	for _, tc := range []struct {
		detection string
		subjects  []string // found on day 0
	}{
		{"auth-failure-burst", []string{"system:serviceaccount:ci:deployer"}},
		{"secret-list-burst", []string{"system:serviceaccount:cert-manager:cert-manager"}},
		{"unusual-hours", nil},
		{"new-source", nil},
	} {
		t.Run(tc.detection, func(t *testing.T) {
			got, err := Run(ctx, clean.store, tc.detection, day0, day1)
			if err != nil {
				t.Fatal(err)
			}
			var subjects []string
			for _, f := range got {
				subjects = append(subjects, f.Subject)
			}
			slices.Sort(subjects)
			if !slices.Equal(subjects, tc.subjects) {
				t.Errorf("on the first day found %q, want %q:\n%s", subjects, tc.subjects, describe(got))
			}
		})
	}
}
