package alerting

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAlertmanagerWireFormat(t *testing.T) {
	t.Parallel()
	var got []map[string]any
	var auth, path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, auth = r.Method+" "+r.URL.Path, r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			http.Error(w, err.Error(), 400)
		}
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	am, err := NewAlertmanager(Endpoint{URL: srv.URL + "/", BearerTokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	err = am.Send(context.Background(), []Alert{{
		Labels: map[string]string{"alertname": "KaccessDetection"}, Annotations: map[string]string{"summary": "x"},
		StartsAt: at, EndsAt: at.Add(4 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if path != "POST /api/v2/alerts" || auth != "Bearer s3cret" {
		t.Errorf("request %q with Authorization %q", path, auth)
	}
	if len(got) != 1 || got[0]["startsAt"] != "2026-12-02T10:00:00Z" || got[0]["endsAt"] != "2026-12-02T10:04:00Z" ||
		got[0]["labels"].(map[string]any)["alertname"] != "KaccessDetection" {
		t.Errorf("body %v", got)
	}
}

func TestRefusalIsAnError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maxAlerts limit reached", http.StatusBadRequest)
	}))
	defer srv.Close()
	wh, err := NewWebhook(Endpoint{URL: srv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	err = wh.Send(context.Background(), []WebhookAlert{{Status: "firing", ID: "a"}}, time.Now())
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "maxAlerts") {
		t.Errorf("error %v, want the status and the server's message", err)
	}
	srv.Close()
	if err := wh.Send(context.Background(), []WebhookAlert{{Status: "firing", ID: "a"}}, time.Now()); err == nil {
		t.Error("a webhook that is down reported success")
	}
}
