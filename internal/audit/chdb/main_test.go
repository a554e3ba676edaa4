package chdb

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The version hack/chdb.sh fetches; tests look for the library there when CHDB_LIB_PATH is unset.
const chdbVersion = "26.7.3-stable.1"

var (
	testLibrary string // libchdb.so
	testHelper  string // kaccess-chdb built for this test run
)

// TestMain builds the helper and finds the library. A missing library fails the run with what
// to do: the embedded store is the default, so its tests must not silently skip.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	lib, err := findTestLibrary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	testLibrary = lib
	dir, err := os.MkdirTemp("", "kaccess-chdb-helper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	testHelper = filepath.Join(dir, HelperName)
	build := exec.Command("go", "build", "-o", testHelper, "github.com/kaccess/kaccess/cmd/kaccess-chdb")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: build the kaccess-chdb helper:", err)
		return 1
	}
	return m.Run()
}

func findTestLibrary() (string, error) {
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CHDB_LIB_PATH=%s: %w; run `make chdb` (hack/chdb.sh) to fetch libchdb.so", p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the module root above the test directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, ".cache", "chdb", chdbVersion, "libchdb.so")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the embedded audit store tests need libchdb.so: run `make chdb` (or hack/chdb.sh) once, "+
			"or set CHDB_LIB_PATH to a libchdb.so (looked for %s)", p)
	}
	return p, nil
}

// openTest opens a store on a fresh directory, closed at the end of the test.
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Library, cfg.Helper = testLibrary, testHelper
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
