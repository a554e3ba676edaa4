package chdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestOpenWithoutLibrarySaysWhatToInstall(t *testing.T) {
	t.Setenv("CHDB_LIB_PATH", "")
	_, err := Open(context.Background(), Config{Dir: t.TempDir(), Library: filepath.Join(t.TempDir(), "libchdb.so"), Helper: testHelperPath(t)})
	if !errors.Is(err, ErrNoLibrary) {
		t.Fatalf("err = %v, want ErrNoLibrary", err)
	}
	for _, want := range []string{"make chdb", "CHDB_LIB_PATH", "ClickHouse server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOpenWithoutHelper(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Open(context.Background(), Config{Dir: t.TempDir(), Library: testLibraryPath(t)})
	if err == nil || !strings.Contains(err.Error(), HelperName) {
		t.Fatalf("err = %v, want one naming %s", err, HelperName)
	}
}

func TestOpenRejectsFileAsDataDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Config{Dir: dir, Library: testLibraryPath(t), Helper: testHelperPath(t)})
	if err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Fatalf("err = %v, want one about the data directory", err)
	}
}

// A helper that dies at start: Open must pass on what it said.
func TestOpenReportsHelperThatCannotStart(t *testing.T) {
	helper := filepath.Join(t.TempDir(), "helper.sh")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\necho 'cannot lock the data directory' >&2\nexit 3\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Config{Dir: t.TempDir(), Library: testLibraryPath(t), Helper: helper})
	if err == nil || !strings.Contains(err.Error(), "cannot lock the data directory") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v, want the helper's exit status and last words", err)
	}
}

// TestHelperKilledIsRestarted kills the helper with SIGKILL between batches: the next call runs
// on a new helper, and nothing written before the kill is lost.
func TestHelperKilledIsRestarted(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	gw := "gw-restart"
	a := storetest.Realistic(gw, 1, 1000, time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC))
	b := storetest.Realistic(gw, 1001, 1000, time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC))
	if err := s.Write(ctx, "a", a); err != nil {
		t.Fatal(err)
	}
	old := s.h.cmd.Process.Pid
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.h.exited
	if err := s.Write(ctx, "b", b); err != nil {
		t.Fatalf("write after the helper died: %v", err)
	}
	if s.h.cmd.Process.Pid == old {
		t.Error("helper was not replaced")
	}
	// The shipper's retry of b, had its acknowledgement been lost, and of a.
	for _, batch := range []struct {
		token  string
		events []*event.Event
	}{{"b", b}, {"a", a}} {
		if err := s.Write(ctx, batch.token, batch.events); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Events(ctx, gw)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2000 || got[0].Seq != 1 || got[1999].Seq != 2000 {
		t.Errorf("after restart: %d events, want 2000 (seq 1..2000)", len(got))
	}
}

// TestHelperDyingMidQuery: the query that was running fails with why, the next one works.
func TestHelperDyingMidQuery(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, Config{})
	h := s.h
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = syscall.Kill(h.cmd.Process.Pid, syscall.SIGKILL)
	}()
	_, err := s.Query(ctx, "SELECT count() FROM numbers(100000000000)", "")
	if err == nil || !strings.Contains(err.Error(), "exited (signal: killed)") {
		t.Fatalf("err = %v, want one saying the helper was killed", err)
	}
	if out, err := s.Query(ctx, "SELECT 7", ""); err != nil || string(out) != "7\n" {
		t.Fatalf("after the helper died: %q, %v", out, err)
	}
}

// TestCancelledQueryReplacesHelper: a context that ends mid-query cannot leave the stream out
// of step; the helper is replaced and the store keeps working.
func TestCancelledQueryReplacesHelper(t *testing.T) {
	s := openTest(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Query(ctx, "SELECT count() FROM numbers(100000000000)", "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	out, err := s.Query(context.Background(), "SELECT 42", "")
	if err != nil || string(out) != "42\n" {
		t.Fatalf("after a cancelled query: %q, %v", out, err)
	}
}

func TestReopenKeepsEvents(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in := storetest.Realistic("gw-reopen", 1, 100, time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC))
	s := openTest(t, Config{Dir: dir})
	if err := s.Write(ctx, "t", in); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Query(ctx, "SELECT 1", ""); err == nil {
		t.Error("query on a closed store succeeded")
	}
	s = openTest(t, Config{Dir: dir})
	got, err := s.Events(ctx, "gw-reopen")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("after reopening: %d events, want %d", len(got), len(in))
	}
	// The dedup window survives a restart too: a batch retried by a gateway that restarted.
	if err := s.Write(ctx, "t", in); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Events(ctx, "gw-reopen"); len(got) != len(in) {
		t.Errorf("retry after reopening stored it again: %d events, want %d", len(got), len(in))
	}
}

func TestWriteNeedsToken(t *testing.T) {
	s := openTest(t, Config{})
	err := s.Write(context.Background(), "", storetest.Realistic("gw", 1, 1, time.Now()))
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("err = %v, want one about the missing token", err)
	}
}

// TestCloseEndsHelperCleanly: closing stdin is how the helper learns to stop; it must exit on
// its own (status 0), not be killed.
func TestCloseEndsHelperCleanly(t *testing.T) {
	s := openTest(t, Config{})
	h := s.h
	s.Close()
	select {
	case <-h.exited:
	default:
		t.Fatal("Close returned before the helper exited")
	}
	if h.err != nil {
		t.Errorf("helper exit: %v, want a clean exit", h.err)
	}
}

func testLibraryPath(t testing.TB) string { lib, _ := testenv.ChDB(t); return lib }

func testHelperPath(t testing.TB) string { _, helper := testenv.ChDB(t); return helper }
