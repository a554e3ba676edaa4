package gateway

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/klog/v2"
)

// maxLibraryValue bounds each value a library logs through klog. k8s.io/apiserver's request
// info parser logs the whole query of a request it cannot parse ("Couldn't parse request"),
// before authentication: unbounded, a client could write megabytes to the log per request.
const maxLibraryValue = 512

// routeKlog sends what the Kubernetes libraries log through klog (client-go, the request info
// parser) to the gateway's log, in its format, with every value cut at maxLibraryValue bytes,
// instead of unformatted and unbounded to stderr.
func routeKlog(h slog.Handler) {
	klog.SetSlogLogger(slog.New(boundedValues{h}))
}

// boundedValues cuts long string (and stringified) values of every record it passes on.
type boundedValues struct{ slog.Handler }

func (b boundedValues) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, bound(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(boundAttr(a))
		return true
	})
	return b.Handler.Handle(ctx, out)
}

func (b boundedValues) WithAttrs(attrs []slog.Attr) slog.Handler {
	bounded := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		bounded[i] = boundAttr(a)
	}
	return boundedValues{b.Handler.WithAttrs(bounded)}
}

func (b boundedValues) WithGroup(name string) slog.Handler {
	return boundedValues{b.Handler.WithGroup(name)}
}

func boundAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, bound(v.String()))
	case slog.KindAny:
		return slog.String(a.Key, bound(fmt.Sprint(v.Any())))
	case slog.KindGroup:
		group := v.Group()
		bounded := make([]any, len(group))
		for i, g := range group {
			bounded[i] = boundAttr(g)
		}
		return slog.Group(a.Key, bounded...)
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func bound(s string) string {
	if len(s) <= maxLibraryValue {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:maxLibraryValue], len(s))
}
