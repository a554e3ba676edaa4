package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one child (etcd or kube-apiserver) with the tail of its output kept for errors.
type process struct {
	name string
	cmd  *exec.Cmd
	tail *tailBuffer
	done chan struct{} // closed once the child has exited
	err  error         // cmd.Wait's result, set before done is closed
}

// startProcess starts bin with args. Output goes to stdout/stderr, or where nil, to logPath.
func startProcess(name, bin string, args []string, stdout, stderr io.Writer, logPath string) (*process, error) {
	p := &process{name: name, tail: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	var logFile *os.File
	if stdout == nil || stderr == nil {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open %s log: %w", name, err)
		}
		logFile = f
		if stdout == nil {
			stdout = f
		}
		if stderr == nil {
			stderr = f
		}
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = io.MultiWriter(stdout, p.tail)
	p.cmd.Stderr = io.MultiWriter(stderr, p.tail)
	// The children must not outlive a test binary that crashes or is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the OS thread that forked the child exits, not the process:
		// pin this goroutine to its thread until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		if logFile != nil {
			_ = logFile.Close()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		if logFile != nil {
			_ = logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// exited reports whether the child has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after timeout, and waits for the child to exit.
func (p *process) stop(timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.name, timeout)
}

// failure describes why the child is not ready, with the end of its log.
func (p *process) failure(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	tail := p.tail.String()
	err := fmt.Errorf("%s %s\n--- last lines of %s output ---\n%s", p.name, msg, p.name, tail)
	if strings.Contains(tail, "address already in use") {
		return errors.Join(errPortInUse, err)
	}
	return err
}

// waitReady polls url until it answers 200, the child exits, ctx ends or readyTimeout passes.
func waitReady(ctx context.Context, p *process, url, token string, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil},
	}
	defer client.CloseIdleConnections()
	last := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("poll %s: %w", url, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return p.failure("exited before %s answered 200 (%v); last answer: %s", url, p.err, last)
		case <-ctx.Done():
			return p.failure("not ready: %s did not answer 200 (%v); last answer: %s", url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// String returns the last 40 lines at most.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// startPickingPorts runs start, which picks free ports itself, up to three times: free ports are
// picked then released, so another process may take one before we bind it, and a start that
// lost such a race (errPortInUse) is retried with fresh ports after stop. A caller with fixed
// ports (fixed) gets one attempt.
func startPickingPorts(fixed bool, start, stop func() error) error {
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil || attempt == 3 || !errors.Is(err, errPortInUse) || fixed {
			return err
		}
		_ = stop()
	}
}
