// Command kaccess-chdb runs the embedded audit store: a chDB (ClickHouse engine as a library)
// session on a data directory, serving queries over stdin/stdout to the gateway that started
// it. It is a separate process because loading libchdb.so is all-or-nothing: the gateway must
// run without the library when it writes to a ClickHouse server. It exits when stdin closes.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/chdb/engine"
)

func main() {
	dir := flag.String("dir", "", "chDB data directory (created when missing)")
	nice := flag.Int("nice", 10, "nice value of the engine's threads (0-19; higher yields the CPU sooner)")
	flag.Parse()
	if err := lowerPriority(*nice); err != nil {
		fmt.Fprintln(os.Stderr, "kaccess-chdb: cannot lower its CPU priority:", err)
	}
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "kaccess-chdb:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	// The protocol owns stdout. The engine may print to fd 1 (ClickHouse logs, warnings), which
	// would corrupt the frames: keep a private copy of stdout for the protocol and point fd 1
	// at stderr before the engine starts.
	protoFD, err := syscall.Dup(1)
	if err != nil {
		return fmt.Errorf("duplicate stdout: %w", err)
	}
	if err := syscall.Dup3(2, 1, 0); err != nil {
		return fmt.Errorf("redirect stdout to stderr: %w", err)
	}
	proto := os.NewFile(uintptr(protoFD), "protocol")

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	eng, err := engine.Open(dir)
	if err != nil {
		return err
	}
	defer eng.Close()
	return chdb.Serve(os.Stdin, proto, eng)
}

// lowerPriority sets the nice value of every thread of this process, before the engine starts
// its own (a thread inherits it from the thread that creates it, and on Linux it is per thread).
// Inserts and merges come in bursts; at a lower priority they take the CPU when the API server
// and the gateway leave it, instead of taking it from them. The spool holds the records until
// then, so a busy machine delays the store, never a request.
func lowerPriority(nice int) error {
	if nice <= 0 {
		return nil
	}
	// Go's runtime may start a thread while the list is walked: walk it until nothing is new.
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		found := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, min(nice, 19)); err != nil {
				return err
			}
			done[tid], found = true, true
		}
		if !found {
			return nil
		}
	}
}
