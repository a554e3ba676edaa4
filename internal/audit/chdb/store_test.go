package chdb

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/storetest"
)

func TestConformance(t *testing.T) {
	s := openTest(t, Config{})
	storetest.Run(t, func(*testing.T) storetest.Store { return s })
}

// TestConcurrentUse: the shipper writes while readers query; calls are serialised, not mixed.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Go(func() {
			for i := range 3 {
				first := uint64(w*3000 + i*1000 + 1)
				evs := storetest.Realistic("gw-concurrent", first, 1000, time.Date(2026, 11, 19, 8, 0, 0, 0, time.UTC))
				if err := s.Write(ctx, fmt.Sprint("c-", first), evs); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := s.Query(ctx, "SELECT count() FROM kaccess.audit_events", ""); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Events(ctx, "gw-concurrent")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 12000 {
		t.Fatalf("stored %d events, want 12000", len(got))
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: gap or duplicate", i, e.Seq)
		}
	}
}

func TestStoredSeqs(t *testing.T) {
	s := openTest(t, Config{})
	ctx := context.Background()
	events := storetest.Realistic("gw-seqs", 10, 5, time.Now())
	if err := s.Write(ctx, "tok-seqs", events); err != nil {
		t.Fatal(err)
	}
	got, err := s.StoredSeqs(ctx, "gw-seqs", 12, 100)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{12, 13, 14}) {
		t.Fatalf("StoredSeqs(12..100) = %v, want [12 13 14]", got)
	}
	if got, _ := s.StoredSeqs(ctx, "other-gw", 1, 100); len(got) != 0 {
		t.Fatalf("another gateway's seqs: %v", got)
	}
}
