// Command kaccess is the kaccess CLI for people: log in through the gateway with a directory
// account, write a kubeconfig that uses kaccess as kubectl's credential plugin, and more.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/kaccess/kaccess/internal/cli"
)

// version is stamped at build time.
var version = "dev"

func main() {
	streams := cli.Streams{
		In: os.Stdin, Out: os.Stdout, Err: os.Stderr,
		// Prompts go to the terminal, not stdout: kubectl reads the credential from stdout.
		Terminal: func() (*os.File, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) },
	}
	if err := cli.NewRootCommand(streams, version).Execute(); err != nil {
		// A pending plan is an outcome, not a failure: the plan is printed, the status says it.
		if !errors.Is(err, cli.ErrChangesPending) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(cli.ExitCode(err))
	}
}
