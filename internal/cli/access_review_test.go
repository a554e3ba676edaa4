package cli

import (
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true}, {"12h", 12 * time.Hour, true}, {"1h30m", 90 * time.Minute, true},
		{"0d", 0, false}, {"-3d", 0, false}, {"d", 0, false}, {"30", 0, false}, {"-1h", 0, false}, {"1.5d", 0, false},
	} {
		got, err := parseSince(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSince(%q) = %s, %v; want %s ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
