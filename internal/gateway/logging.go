package gateway

import (
	"context"
	"io"
	"log/slog"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// NewLogger builds the gateway's logger, writing to w through a buffer (see logBuffer); call
// the returned flush before the process exits.
//
// What each level may show: error and warn, a failure and its cause; info, one line per request
// (who, what, outcome) and each state change; debug, detail for diagnosis. No level ever shows a
// token, password or key: code logs a reason or a session id instead.
func NewLogger(c config.Log, w io.Writer) (log *slog.Logger, flush func()) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	buf := newLogBuffer(w)
	var h slog.Handler = slog.NewJSONHandler(buf, opts)
	if c.Format == "text" {
		h = slog.NewTextHandler(buf, opts)
	}
	h = flushOnWarn{WithRequestIDs(h), buf}
	routeKlog(h)
	return slog.New(h), func() { _ = buf.Flush() }
}

// WithRequestIDs adds the request id to every record logged with a request's context, so each
// line of one request can be found together.
func WithRequestIDs(h slog.Handler) slog.Handler { return requestIDHandler{h} }

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := requestctx.RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
