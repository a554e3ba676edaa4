package chdb

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// TestMain runs the tests with testenv, which finds libchdb.so and builds the helper once
// (testenv.ChDB); a missing library fails the run with what to do: the embedded store is the
// default, so its tests never skip.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// openTest opens a store on a fresh directory, closed at the end of the test.
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Library, cfg.Helper = testenv.ChDB(t)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
