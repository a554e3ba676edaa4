package spool

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// A disk that fills before the cap: appends fail with ENOSPC and lose nothing already
// spooled, Free says so at once (capture then refuses requests up front with 503 instead of
// cutting off responses), and once the disk has room again the spool goes on where it was.
func TestDiskFullBeforeTheCap(t *testing.T) {
	dir := testenv.MountTmpfs(t, 1<<20)
	cfg := testConfig(dir)
	cfg.MaxBytes = 64 << 20 // far above the disk
	s := mustOpen(t, cfg)
	if free := s.Free(); free > 1<<20 {
		t.Fatalf("Free = %d on a 1 MiB disk; want at most the disk's free space", free)
	}
	appendN(t, s, 100)

	freeDisk := testenv.FillDisk(t, dir)
	var failed int
	for range 200 {
		want := s.Stats().LastSeq + 1
		if _, err := s.Append(payloadFor(want)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append on a full disk: %v, want ENOSPC", err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("every append succeeded on a full disk")
	}
	if free := s.Free(); free >= 64<<10 {
		t.Fatalf("Free = %d right after an append ran out of disk; want below 64 KiB", free)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync after ENOSPC: %v (a failed write must not make the spool unusable)", err)
	}

	freeDisk()
	deadline := time.Now().Add(5 * time.Second)
	for s.Free() < 512<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("Free = %d a while after the disk was freed; want the room back", s.Free())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, last := appendN(t, s, 100)
	// Every record that was accepted, before, during and after, reads back in order with no
	// gap and no remains of the failed writes.
	recs := readAll(t, s, 1000, last, true)
	if got := uint64(len(recs)); got != last {
		t.Fatalf("read %d records, want %d", got, last)
	}
}
