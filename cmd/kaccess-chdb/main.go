// Command kaccess-chdb runs the embedded audit store: a chDB (ClickHouse engine as a library)
// session on a data directory, serving queries over stdin/stdout to the gateway that started
// it. It is a separate process because loading libchdb.so is all-or-nothing: the gateway must
// run without the library when it writes to a ClickHouse server. It exits when stdin closes.
package main

import (
	"flag"
	"fmt"
	"os"
	"syscall"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/chdb/engine"
)

func main() {
	dir := flag.String("dir", "", "chDB data directory (created when missing)")
	flag.Parse()
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
