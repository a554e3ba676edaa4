package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/config"
)

func TestLoggerBuffersInfoAndWritesWarningsAtOnce(t *testing.T) {
	t.Parallel()
	out := &lockedWriter{w: &strings.Builder{}}
	log, flush := NewLogger(config.Log{Level: "info", Format: "json"}, out)
	log.Info("request")
	if got := out.String(); got != "" {
		t.Fatalf("an info line was written at once: %q", got)
	}
	log.Warn("trouble")
	if got := out.String(); !strings.Contains(got, `"msg":"request"`) || !strings.Contains(got, `"msg":"trouble"`) {
		t.Fatalf("a warning did not write it and the lines before it: %q", got)
	}
	log.Info("later")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), `"msg":"later"`) {
		if time.Now().After(deadline) {
			t.Fatalf("an info line was not written within %s: %q", logFlushInterval, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Info("last")
	flush()
	if !strings.Contains(out.String(), `"msg":"last"`) {
		t.Fatalf("flush did not write the last line: %q", out.String())
	}
}

// The request info parser logs the whole query of a list it cannot parse, through klog and before
// authentication: it lands in the gateway's log, in its format, with each value bounded.
func TestLibraryLogLinesAreBounded(t *testing.T) {
	out := &lockedWriter{w: &strings.Builder{}}
	_, flush := NewLogger(config.Log{Level: "info", Format: "json"}, out)
	r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/a/configmaps?labelSelector="+strings.Repeat("a", 1<<20)+"%3Db", nil)
	if _, err := requestInfoFactory.NewRequestInfo(r); err != nil {
		t.Fatal(err)
	}
	flush()
	got := out.String()
	if !strings.Contains(got, `"msg":"Couldn't parse request"`) || len(got) > 4<<10 {
		t.Fatalf("library log line of %d bytes: %.300s", len(got), got)
	}
}
