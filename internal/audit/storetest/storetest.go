// Package storetest is the conformance suite every audit store passes (the embedded chDB store
// and the ClickHouse server store): what goes in comes out, field for field, a retried batch is
// stored once, and a gateway's events come back in sequence order.
package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
)

// Store is an audit store under test.
type Store interface {
	ship.Sink
	// Events returns the stored events of one gateway instance, ordered by Seq.
	Events(ctx context.Context, gateway string) ([]*event.Event, error)
}

// Run runs the suite. open returns the store to test; it may return the same store to every
// case: each case writes under its own gateway instance name and reads only that back.
func Run(t *testing.T, open func(t *testing.T) Store) {
	cases := []struct {
		name string
		run  func(t *testing.T, s Store, gateway string)
	}{
		{"RoundTripEveryField", testRoundTrip},
		{"RetryWithSameTokenStoredOnce", testRetryStoredOnce},
		{"RetryAfterOtherBatchesStoredOnce", testRetryAfterOthers},
		{"RetrySpanningDaysStoredOnce", testRetrySpanningDays},
		{"DifferentTokensBothStored", testDifferentTokens},
		{"OrderedBySeq", testOrderedBySeq},
		{"EmptyBatch", testEmptyBatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, open(t), gatewayName(t))
		})
	}
}

// gatewayName is unique per test and run, so cases sharing a store never see each other's rows.
func gatewayName(t *testing.T) string {
	return t.Name() + "/" + event.NewID()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func write(t *testing.T, s Store, token string, events []*event.Event) {
	t.Helper()
	if err := s.Write(ctx(t), token, events); err != nil {
		t.Fatalf("Write(token %s, %d events): %v", token, len(events), err)
	}
}

func read(t *testing.T, s Store, gateway string) []*event.Event {
	t.Helper()
	got, err := s.Events(ctx(t), gateway)
	if err != nil {
		t.Fatalf("Events(%s): %v", gateway, err)
	}
	return got
}

func testRoundTrip(t *testing.T, s Store, gw string) {
	in := Varied(gw, 1)
	write(t, s, gw+"/batch-1", in)
	assertEvents(t, read(t, s, gw), in)
}

func testRetryStoredOnce(t *testing.T, s Store, gw string) {
	in := Realistic(gw, 1, 500, baseTime)
	write(t, s, "tok-"+gw, in)
	write(t, s, "tok-"+gw, in)
	assertEvents(t, read(t, s, gw), in)
}

func testRetryAfterOthers(t *testing.T, s Store, gw string) {
	a := Realistic(gw, 1, 100, baseTime)
	b := Realistic(gw, 101, 100, baseTime.Add(time.Minute))
	write(t, s, gw+"/a", a)
	write(t, s, gw+"/b", b)
	write(t, s, gw+"/a", a) // the shipper's retry of a batch whose ack was lost
	assertEvents(t, read(t, s, gw), append(a, b...))
}

// testRetrySpanningDays writes a batch whose rows fall into two daily partitions: deduplication
// must recognise every part of the retry, not just the first.
func testRetrySpanningDays(t *testing.T, s Store, gw string) {
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	in := Realistic(gw, 1, 200, midnight.Add(-100*time.Second)) // one event every 1 s... across midnight
	write(t, s, gw+"/x", in)
	write(t, s, gw+"/x", in)
	assertEvents(t, read(t, s, gw), in)
}

func testDifferentTokens(t *testing.T, s Store, gw string) {
	a := Realistic(gw, 1, 50, baseTime)
	b := Realistic(gw, 51, 50, baseTime)
	write(t, s, gw+"/1", a)
	write(t, s, gw+"/2", b)
	assertEvents(t, read(t, s, gw), append(a, b...))
}

func testOrderedBySeq(t *testing.T, s Store, gw string) {
	late := Realistic(gw, 1001, 300, baseTime)
	early := Realistic(gw, 1, 300, baseTime.Add(time.Hour)) // later times, lower seqs
	write(t, s, gw+"/late", late)
	write(t, s, gw+"/early", early)
	assertEvents(t, read(t, s, gw), append(early, late...))
}

func testEmptyBatch(t *testing.T, s Store, gw string) {
	if err := s.Write(ctx(t), gw+"/empty", nil); err != nil {
		t.Fatalf("Write of an empty batch: %v", err)
	}
	if got := read(t, s, gw); len(got) != 0 {
		t.Fatalf("an empty batch stored %d events", len(got))
	}
}
