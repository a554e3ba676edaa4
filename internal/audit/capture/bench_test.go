package capture

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/kaccess/kaccess/internal/audit/spool"
)

// discard is a ResponseWriter that keeps nothing, so the benchmark measures the handlers.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkRequest measures one GET through the chain with and without capture (same request
// parsing and authentication stand-in on both sides), so the difference is what capture adds
// to the proxy path: building the event, encoding it and the write(2) into the spool.
func BenchmarkRequest(b *testing.B) {
	uuid.EnableRandPool() // as cmd/gateway does
	body := []byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web"}}`)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "59")
		w.WriteHeader(200)
		w.Write(body)
	})
	run := func(b *testing.B, h http.Handler) {
		req := httptest.NewRequest("GET", "/api/v1/namespaces/demo/pods/web", nil)
		req.Header.Set("Authorization", "Bearer x")
		req.Header.Set("User-Agent", "kubectl/v1.37.2 (linux/amd64) kubernetes/abcdef")
		w := &discard{h: http.Header{}}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	}
	b.Run("without-capture", func(b *testing.B) {
		run(b, chainAround(b, func(h http.Handler) http.Handler { return h }, inner))
	})
	b.Run("with-capture", func(b *testing.B) {
		// The spool as the gateway runs it: default segment size and group commit interval.
		s, err := spool.Open(spool.Config{Dir: b.TempDir(), Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		c := newCapture(b, s, nil)
		run(b, chain(b, c, inner))
	})
}
