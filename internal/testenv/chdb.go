package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// ChDBVersion is the libchdb release hack/chdb.sh fetches into .cache/chdb/<version>.
const ChDBVersion = "26.7.3-stable.1"

var (
	chdbOnce            sync.Once
	chdbLib, chdbHelper string
	chdbErr             error
	chdbDir             string
)

// ChDB returns libchdb.so and a kaccess-chdb helper built from this checkout, for tests that
// run the embedded audit store. The library comes from CHDB_LIB_PATH or .cache/chdb (`make
// chdb`); a missing one fails the test with what to run (the embedded store is the default, so
// its tests never skip). The helper is built once per test binary; CleanupChDB removes it.
func ChDB(tb testing.TB) (library, helper string) {
	tb.Helper()
	chdbOnce.Do(func() { chdbLib, chdbHelper, chdbErr = buildChDB() })
	if chdbErr != nil {
		tb.Fatal(chdbErr)
	}
	return chdbLib, chdbHelper
}

func buildChDB() (lib, helper string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	lib = os.Getenv("CHDB_LIB_PATH")
	if lib == "" {
		lib = filepath.Join(root, ".cache", "chdb", ChDBVersion, "libchdb.so")
	}
	if _, err := os.Stat(lib); err != nil {
		return "", "", fmt.Errorf("testenv: the embedded audit store needs libchdb.so (%v): run `make chdb` once, or set CHDB_LIB_PATH", err)
	}
	chdbDir, err = os.MkdirTemp("", "kaccess-chdb-")
	if err != nil {
		return "", "", err
	}
	helper = filepath.Join(chdbDir, "kaccess-chdb")
	build := exec.Command("go", "build", "-o", helper, ModulePath+"/cmd/kaccess-chdb")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("testenv: build kaccess-chdb: %v\n%s", err, out)
	}
	return lib, helper, nil
}

// BuildBinary builds a command of this module (e.g. "cmd/gateway") into dir and returns its
// path, for tests that run it as a process (kill -9, restarts).
func BuildBinary(tb testing.TB, pkg, dir string) string {
	tb.Helper()
	root, err := repoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", out, ModulePath+"/"+pkg)
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// cleanupChDB removes the helper built by ChDB; Run calls it when the tests are done.
func cleanupChDB() {
	if chdbDir != "" {
		os.RemoveAll(chdbDir)
	}
}
