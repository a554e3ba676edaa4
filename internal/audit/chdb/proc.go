package chdb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// helper is one running kaccess-chdb process.
type helper struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	inBuf  *bufio.Writer
	out    *bufio.Reader
	stderr *tail
	exited chan struct{} // closed when the process has exited and been reaped
	err    error         // exit status, valid after exited is closed
}

// startHelper starts the helper on cfg.Dir and waits until it answers.
func startHelper(ctx context.Context, cfg Config) (*helper, error) {
	cmd := exec.Command(cfg.Helper, "-dir", cfg.Dir)
	cmd.Env = append(os.Environ(), "CHDB_LIB_PATH="+cfg.Library)
	// The helper must not outlive the gateway: it would keep the data directory locked. It also
	// exits when its stdin closes; Pdeathsig covers a gateway killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	h := &helper{cmd: cmd, stderr: newTail(8<<10, cfg.Logger), exited: make(chan struct{})}
	cmd.Stderr = h.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	h.in, h.inBuf, h.out = in, bufio.NewWriterSize(in, 1<<20), bufio.NewReaderSize(out, 1<<20)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the chdb helper %s: %w", cfg.Helper, err)
	}
	go func() {
		h.err = cmd.Wait()
		close(h.exited)
	}()
	if _, err := h.query(ctx, []byte("SELECT 1"), "TabSeparated"); err != nil {
		h.kill()
		return nil, fmt.Errorf("the chdb helper did not come up: %w", err)
	}
	return h, nil
}

// query sends one request and reads its answer. An error of the query itself is a *QueryError
// and leaves the helper usable; any other error means the helper is gone or out of step and
// must be replaced. A done ctx kills the helper: a query cannot be abandoned half-way in a
// stream protocol.
func (h *helper) query(ctx context.Context, sql []byte, format string) ([]byte, error) {
	stop := context.AfterFunc(ctx, h.kill)
	defer stop()
	res, err := h.exchange(sql, format)
	if err != nil && !isQueryError(err) {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("chdb query abandoned: %w", ctxErr)
		}
		return nil, h.describe(err)
	}
	return res, err
}

func (h *helper) exchange(sql []byte, format string) ([]byte, error) {
	if err := writeFrame(h.inBuf, []byte(format)); err != nil {
		return nil, err
	}
	if err := writeFrame(h.inBuf, sql); err != nil {
		return nil, err
	}
	if err := h.inBuf.Flush(); err != nil {
		return nil, err
	}
	status, err := h.out.ReadByte()
	if err != nil {
		return nil, err
	}
	body, err := readFrame(h.out)
	if err != nil {
		return nil, noEOF(err)
	}
	switch status {
	case statusOK:
		return body, nil
	case statusErr:
		return nil, &QueryError{Message: string(body)}
	default:
		return nil, fmt.Errorf("chdb helper answered status %d: the stream is out of step", status)
	}
}

// describe adds how the helper ended, and the last of what it printed, to a transport error.
// A broken pipe usually means the process is exiting: give it a moment to be reaped, so the
// error says why it ended.
func (h *helper) describe(err error) error {
	select {
	case <-h.exited:
		return fmt.Errorf("chdb helper exited (%v): %w; its last output: %s", h.err, err, h.stderr.String())
	case <-time.After(2 * time.Second):
		return fmt.Errorf("chdb helper: %w", err)
	}
}

func (h *helper) hasExited() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

// kill ends the process and waits until it is reaped, so a successor can lock the directory.
func (h *helper) kill() {
	_ = h.cmd.Process.Kill()
	<-h.exited
}

// close asks the helper to exit by closing its stdin, and kills it if it does not.
func (h *helper) close() {
	_ = h.in.Close()
	select {
	case <-h.exited:
	case <-time.After(closeGrace):
		h.kill()
	}
}

// closeGrace is how long a helper may take to finish its query and exit after its stdin closed.
const closeGrace = 30 * time.Second

// QueryError is an error ClickHouse reported for a query (syntax, unknown table, ...), as
// opposed to the helper failing.
type QueryError struct{ Message string }

func (e *QueryError) Error() string { return "chdb: " + strings.TrimSpace(e.Message) }

func isQueryError(err error) bool {
	var q *QueryError
	return errors.As(err, &q)
}

// tail keeps the last bytes the helper wrote to stderr (for error messages) and logs each line.
type tail struct {
	mu     sync.Mutex
	buf    []byte
	max    int
	logger *slog.Logger
}

func newTail(max int, logger *slog.Logger) *tail { return &tail{max: max, logger: logger} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(p)), "\n") {
		if line != "" {
			t.logger.Debug("chdb helper output", "line", line)
		}
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == 0 {
		return "(nothing)"
	}
	return strings.TrimSpace(string(t.buf))
}
