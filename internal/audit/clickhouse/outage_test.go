package clickhouse

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// TestOutage kills the server: Write fails promptly with an error that says so; after the
// server is back, the same batch goes in once (the failed attempt never reached the server).
func TestOutage(t *testing.T) {
	srv := testenv.SharedClickHouse(t)
	cfg := newOldTable(t)
	cfg.DialTimeout = 2 * time.Second
	s := mustOpen(t, cfg)
	ctx := context.Background()
	first, second := events("gw-outage", 1, 1000), events("gw-outage", 1001, 1000)
	if err := s.Write(ctx, "tok-1", first); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil { // a crash; TestWriteAfterRestart covers Stop (SIGTERM) too
		t.Fatal(err)
	}
	t.Cleanup(func() { // for the next tests, whatever happens
		if err := srv.Start(context.Background()); err != nil {
			t.Errorf("start the server again: %v", err)
		}
	})
	for range 3 { // the pool's idle connections are dead too
		began := time.Now()
		err := s.Write(ctx, "tok-2", second)
		took := time.Since(began)
		if err == nil {
			t.Fatal("Write succeeded while the server was down")
		}
		if took > 5*time.Second {
			t.Errorf("Write took %s to fail during the outage; want it prompt", took)
		}
		if !strings.Contains(err.Error(), "clickhouse audit store") || !strings.Contains(err.Error(), "server is down") {
			t.Errorf("error does not say which store failed and why: %v", err)
		}
		t.Logf("during the outage (%s): %v", took.Round(time.Millisecond), err)
	}
	// A context that ends bounds a Write too.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := s.Write(short, "tok-2", second); err == nil {
		t.Fatal("Write succeeded while the server was down")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, "tok-2", second); err != nil {
		t.Fatalf("Write after the server came back: %v", err)
	}
	got, err := s.Events(ctx, "gw-outage")
	if err != nil {
		t.Fatal(err)
	}
	if want := append(ids(first), ids(second)...); !slices.Equal(ids(got), want) {
		t.Fatalf("read back %d events, want the %d written once each in order", len(got), len(want))
	}
}

// TestFailover lists an address where nothing listens first: writes go to the second.
func TestFailover(t *testing.T) {
	cfg := newOldTable(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	_ = l.Close() // the port is now refused
	cfg.Addresses = append([]string{down}, cfg.Addresses...)
	s := mustOpen(t, cfg)
	ctx := context.Background()
	for i := range 5 {
		if err := s.Write(ctx, "tok", events("gw-failover", uint64(i*100+1), 100)); err != nil {
			t.Fatalf("write %d with the first address down: %v", i, err)
		}
	}
	got, err := s.Events(ctx, "gw-failover")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 500 {
		t.Fatalf("read back %d events, want 500", len(got))
	}
}

// TestWriteAfterRestart restarts the server between two writes, with no write during the
// outage: the pool's idle connections are dead, and the next Write must still go in.
func TestWriteAfterRestart(t *testing.T) {
	srv := testenv.SharedClickHouse(t)
	s := mustOpen(t, newOldTable(t))
	ctx := context.Background()
	first, second := events("gw-restart", 1, 500), events("gw-restart", 501, 500)
	if err := s.Write(ctx, "tok-1", first); err != nil {
		t.Fatal(err)
	}
	for _, stop := range []struct {
		name string
		stop func() error
	}{{"kill", srv.Kill}, {"stop", srv.Stop}} {
		if err := stop.stop(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, "tok-2-"+stop.name, second); err != nil {
			t.Fatalf("first Write after a %s and start: %v", stop.name, err)
		}
		second = events("gw-restart", 1001, 500)
	}
	got, err := s.Events(ctx, "gw-restart")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1500 {
		t.Fatalf("read back %d events, want 1500", len(got))
	}
}

// TestFailoverToSecondServer writes to two servers listed in order: while the first is down
// the writes go to the second, and nothing is lost across the two.
func TestFailoverToSecondServer(t *testing.T) {
	ctx := context.Background()
	primary := testenv.SharedClickHouse(t)
	secondary, err := testenv.StartClickHouse(ctx, testenv.ClickHouseConfig{Password: primary.Password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secondary.Close() })
	cfg := newOldTable(t)
	other := cfg
	other.Addresses = []string{secondary.Addr} // same user and password, as in a real cluster
	if err := mustOpenConn(t, other).Exec(ctx, fmt.Sprintf(oldTableDDL, cfg.Table)); err != nil {
		t.Fatal(err)
	}
	cfg.Addresses = []string{primary.Addr, secondary.Addr}
	cfg.DialTimeout = time.Second
	s := mustOpen(t, cfg)
	write := func(first uint64) error { return s.Write(ctx, fmt.Sprint("tok-", first), events("gw-fo2", first, 100)) }
	if err := write(1); err != nil {
		t.Fatal(err)
	}
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Start(context.Background()) })
	// The first write may meet a dead pooled connection to the primary and fail; the
	// shipper retries the same batch, which then goes to the secondary.
	for first := uint64(101); first <= 501; first += 100 {
		if err := write(first); err != nil {
			t.Logf("write at seq %d while the primary is down: %v; retrying once", first, err)
			if err := write(first); err != nil {
				t.Fatalf("retry at seq %d while the primary is down: %v", first, err)
			}
		}
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Read each server on its own: s's pool now holds connections to the secondary.
	only := cfg
	only.Addresses = []string{primary.Addr}
	onPrimary, err := mustOpen(t, only).Events(ctx, "gw-fo2")
	if err != nil {
		t.Fatal(err)
	}
	onSecondary, err := mustOpen(t, other).Events(ctx, "gw-fo2")
	if err != nil {
		t.Fatal(err)
	}
	if len(onPrimary) != 100 || len(onSecondary) != 500 {
		t.Fatalf("primary holds %d events (want 100), secondary %d (want 500)", len(onPrimary), len(onSecondary))
	}
}

// TestWriteToFrozenServer pauses the server so that it accepts nothing and answers nothing:
// Write returns by the context's deadline, and without one by ReadTimeout, never hangs.
func TestWriteToFrozenServer(t *testing.T) {
	srv := testenv.SharedClickHouse(t)
	cfg := newOldTable(t)
	cfg.ReadTimeout, cfg.DialTimeout = 2*time.Second, time.Second
	s := mustOpen(t, cfg)
	ctx := context.Background()
	if err := s.Write(ctx, "tok-1", events("gw-frozen", 1, 100)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = srv.Resume()
		}
	})
	for _, c := range []struct {
		name    string
		timeout time.Duration // of the context; 0 for none
		limit   time.Duration
	}{{"context deadline", 500 * time.Millisecond, 1500 * time.Millisecond}, {"read timeout", 0, 5 * time.Second}} {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if c.timeout > 0 {
			wctx, cancel = context.WithTimeout(ctx, c.timeout)
		}
		began := time.Now()
		err := s.Write(wctx, "tok-2", events("gw-frozen", 101, 100))
		took := time.Since(began)
		cancel()
		if err == nil {
			t.Fatalf("%s: Write to a frozen server succeeded", c.name)
		}
		if took > c.limit {
			t.Errorf("%s: Write took %s to fail, want at most %s", c.name, took, c.limit)
		}
		t.Logf("%s: failed after %s: %v", c.name, took.Round(time.Millisecond), err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	if err := s.Write(ctx, "tok-2", events("gw-frozen", 101, 100)); err != nil {
		t.Fatalf("Write after the server resumed: %v", err)
	}
	got, err := s.Events(ctx, "gw-frozen")
	if err != nil {
		t.Fatal(err)
	}
	// 18.16 has no deduplication token: a timed-out Write whose rows the server had already
	// received is stored again by the retry. Only a loss is an error here; the count says
	// which happened.
	if len(got) < 200 {
		t.Fatalf("read back %d events, want at least the 200 written", len(got))
	}
	t.Logf("read back %d events for 200 written (more means the timed-out attempt went in too)", len(got))
}
