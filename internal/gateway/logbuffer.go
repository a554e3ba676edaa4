package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// logBuffer gathers log lines and writes them together at most logFlushInterval later, or
// once logBufferBytes have gathered: at info the gateway logs a line per request, and one
// write(2) each was a system call per request on the hot path. Lines at warn and above are
// written at once (flushOnWarn), so a failure is in the log before anything else happens.
type logBuffer struct {
	mu        sync.Mutex
	w         io.Writer
	buf       []byte
	scheduled bool
}

const (
	logFlushInterval = 100 * time.Millisecond
	logBufferBytes   = 64 << 10
)

func newLogBuffer(w io.Writer) *logBuffer { return &logBuffer{w: w} }

// Write takes one whole line (slog handlers write each record with one call).
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) >= logBufferBytes {
		return len(p), b.flushLocked()
	}
	if !b.scheduled {
		b.scheduled = true
		time.AfterFunc(logFlushInterval, func() { _ = b.Flush() })
	}
	return len(p), nil
}

// Flush writes what has gathered.
func (b *logBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scheduled = false
	return b.flushLocked()
}

func (b *logBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	if cap(b.buf) > 4*logBufferBytes {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

// flushOnWarn writes the buffer out after every record at warn or above.
type flushOnWarn struct {
	slog.Handler
	buf *logBuffer
}

func (h flushOnWarn) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		_ = h.buf.Flush()
	}
	return err
}

func (h flushOnWarn) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushOnWarn{h.Handler.WithAttrs(attrs), h.buf}
}

func (h flushOnWarn) WithGroup(name string) slog.Handler {
	return flushOnWarn{h.Handler.WithGroup(name), h.buf}
}
