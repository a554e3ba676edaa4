package testenv

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// WebhookNotification is one notification Alertmanager's webhook_config posts (payload
// version 4): one per alert group and flush.
type WebhookNotification struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"` // firing or resolved
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`

	// ReceivedAt and Path are set by the receiver.
	ReceivedAt time.Time `json:"-"`
	Path       string    `json:"-"`
}

// WebhookAlert is one alert of a notification.
type WebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// WebhookReceiver is a real HTTP server on 127.0.0.1 that records the notifications posted to
// it (any path: give each receiver of a config its own path, e.g. URL+"/page"). It answers 200,
// or SetStatus's code to make Alertmanager retry.
type WebhookReceiver struct {
	URL string

	srv     *httptest.Server
	mu      sync.Mutex
	got     []WebhookNotification
	bad     []string // bodies that did not parse
	status  int
	changed chan struct{} // closed and replaced on every notification
}

// StartWebhookReceiver starts a receiver that stops when the test ends.
func StartWebhookReceiver(tb testing.TB) *WebhookReceiver {
	tb.Helper()
	r := &WebhookReceiver{status: http.StatusOK, changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	tb.Cleanup(r.srv.Close)
	tb.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, b := range r.bad {
			tb.Errorf("webhook receiver: a body that is not an Alertmanager notification: %.500s", b)
		}
	})
	return r
}

func (r *WebhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var n WebhookNotification
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Method != http.MethodPost || json.Unmarshal(body, &n) != nil || n.Version == "" {
		r.bad = append(r.bad, req.Method+" "+req.URL.Path+" "+string(body))
		http.Error(w, "not an Alertmanager webhook notification", http.StatusBadRequest)
		return
	}
	if r.status != http.StatusOK {
		http.Error(w, "refused by the test", r.status)
		return
	}
	n.ReceivedAt, n.Path = time.Now(), req.URL.Path
	r.got = append(r.got, n)
	close(r.changed)
	r.changed = make(chan struct{})
	w.WriteHeader(http.StatusOK)
}

// SetStatus makes the receiver answer code (e.g. 503, so Alertmanager retries) from now on,
// without recording what it refuses; 200 accepts again.
func (r *WebhookReceiver) SetStatus(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = code
}

// Notifications returns what was accepted so far, oldest first.
func (r *WebhookReceiver) Notifications() []WebhookNotification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]WebhookNotification(nil), r.got...)
}

// WaitFor waits until at least n notifications were accepted, or fails the test after timeout
// with what arrived. It returns all accepted so far.
func (r *WebhookReceiver) WaitFor(tb testing.TB, n int, timeout time.Duration) []WebhookNotification {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, changed := append([]WebhookNotification(nil), r.got...), r.changed
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("webhook receiver: %d notifications after %s, want %d; got %s", len(got), timeout, n, describeNotifications(got))
			return nil
		}
	}
}

// Quiet checks that no notification beyond the first n arrives for d (e.g. longer than the
// config's group_interval), and fails the test with the extra ones otherwise.
func (r *WebhookReceiver) Quiet(tb testing.TB, n int, d time.Duration) {
	tb.Helper()
	time.Sleep(d)
	if got := r.Notifications(); len(got) != n {
		tb.Fatalf("webhook receiver: %d notifications, want exactly %d; got %s", len(got), n, describeNotifications(got))
	}
}

func describeNotifications(ns []WebhookNotification) string {
	type short struct {
		Path        string
		Status      string
		GroupLabels map[string]string
		Alerts      []map[string]string
	}
	out := make([]short, 0, len(ns))
	for _, n := range ns {
		s := short{Path: n.Path, Status: n.Status, GroupLabels: n.GroupLabels}
		for _, a := range n.Alerts {
			l := map[string]string{"_status": a.Status}
			for k, v := range a.Labels {
				l[k] = v
			}
			s.Alerts = append(s.Alerts, l)
		}
		out = append(out, s)
	}
	b, _ := json.Marshal(out)
	return string(b)
}
