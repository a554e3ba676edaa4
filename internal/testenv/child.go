package testenv

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Child is a process a test starts and kills itself (a gateway binary for crash tests). It
// dies with the test binary; its output goes to a log file the test can show.
type Child struct {
	p   *process
	Log string
}

// StartChild starts bin with args; output goes to name.log in dir. The child is killed when the
// test ends.
func StartChild(tb testing.TB, name, dir, bin string, args ...string) *Child {
	tb.Helper()
	log := filepath.Join(dir, name+".log")
	p, err := startProcess(name, bin, args, nil, nil, log)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Child{p: p, Log: log}
	tb.Cleanup(func() { _ = c.Kill() })
	return c
}

// Kill sends SIGKILL (kill -9: no shutdown, no final fsync) and waits for the exit.
func (c *Child) Kill() error {
	if c.p.exited() {
		return nil
	}
	err := c.p.cmd.Process.Signal(syscall.SIGKILL)
	<-c.p.done
	return err
}

// Stop sends SIGTERM and waits up to timeout before killing.
func (c *Child) Stop(timeout time.Duration) error { return c.p.stop(timeout) }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool { return c.p.exited() }

// Output returns the end of the child's output.
func (c *Child) Output() string { return c.p.tail.String() }

// FreePorts returns n distinct free TCP ports on 127.0.0.1, for processes a test starts itself
// and must restart on the same address.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports, err := freePorts(n)
	if err != nil {
		tb.Fatal(err)
	}
	return ports
}
