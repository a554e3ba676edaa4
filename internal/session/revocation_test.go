package session

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestMemoryRevocationStore(t *testing.T) {
	t.Parallel()
	type op struct {
		step   time.Duration // clock step before the op
		revoke string        // session to revoke...
		until  time.Duration // ...until now+until
		check  string        // session to check
		want   bool
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"unknown session", []op{{check: "a", want: false}}},
		{"revoked until the deadline, inclusive", []op{
			{revoke: "a", until: time.Hour},
			{check: "a", want: true},
			{step: time.Hour, check: "a", want: true},
			{step: time.Second, check: "a", want: false},
		}},
		{"deadline in the past is a no-op", []op{
			{revoke: "a", until: -time.Second},
			{check: "a", want: false},
		}},
		{"a second revoke keeps the later deadline", []op{
			{revoke: "a", until: 2 * time.Hour},
			{revoke: "a", until: time.Hour},
			{step: 90 * time.Minute, check: "a", want: true},
			{revoke: "a", until: time.Hour},
			{step: 59 * time.Minute, check: "a", want: true},
		}},
		{"others unaffected", []op{
			{revoke: "a", until: time.Hour},
			{check: "b", want: false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := testingclock.NewFakeClock(testStart)
			s := NewMemoryRevocationStore(clk)
			for i, o := range tt.ops {
				clk.Step(o.step)
				if o.revoke != "" {
					if err := s.Revoke(t.Context(), o.revoke, clk.Now().Add(o.until)); err != nil {
						t.Fatalf("op %d: %v", i, err)
					}
				}
				if o.check != "" {
					if got := s.IsRevoked(o.check); got != o.want {
						t.Fatalf("op %d: IsRevoked(%s) = %v, want %v", i, o.check, got, o.want)
					}
				}
			}
		})
	}
}

func TestMemoryRevocationStoreForgets(t *testing.T) {
	t.Parallel()
	clk := testingclock.NewFakeClock(testStart)
	s := NewMemoryRevocationStore(clk)
	for _, id := range []string{"a", "b", "c"} {
		if err := s.Revoke(t.Context(), id, testStart.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke(t.Context(), "", testStart.Add(time.Hour)); err == nil {
		t.Error("empty session id accepted")
	}
	clk.Step(time.Hour + sweepEvery)
	if err := s.Revoke(t.Context(), "d", clk.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := s.len(); n != 1 {
		t.Fatalf("%d entries after the sweep, want only d", n)
	}
}
