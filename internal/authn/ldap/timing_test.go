package ldap

import (
	"testing"
	"time"
)

func TestDurationAverage(t *testing.T) {
	t.Parallel()
	var a durationAverage
	if _, ok := a.value(); ok {
		t.Fatal("a value before any sample")
	}
	a.observe(10 * time.Millisecond)
	if v, _ := a.value(); v != 10*time.Millisecond {
		t.Fatalf("first sample: %v", v)
	}
	for range 100 {
		a.observe(2 * time.Millisecond)
	}
	if v, _ := a.value(); v < 2*time.Millisecond || v > 2100*time.Microsecond {
		t.Fatalf("after many 2 ms samples: %v", v)
	}
}
