package testenv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// An alert posted through the API v2 reaches the webhook receiver once, with its labels and
// annotations; after a restart on the same storage the notification log still knows it was
// sent (no second notification), and resolving it sends the resolved notification.
func TestAlertmanagerDeliversToWebhook(t *testing.T) {
	recv := testenv.StartWebhookReceiver(t)
	am := testenv.MustStartAlertmanager(t, []byte(fmt.Sprintf(`
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s/hook
`, recv.URL)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	startsAt := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	alert := testenv.PostableAlert{
		Labels:      map[string]string{"alertname": "TestAlert", "severity": "warning", "instance": "gw-1"},
		Annotations: map[string]string{"summary": "a test alert"},
		StartsAt:    startsAt,
	}
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}
	got := recv.WaitFor(t, 1, 20*time.Second)
	n := got[0]
	if n.Status != "firing" || n.Path != "/hook" || n.Receiver != "hook" || n.GroupLabels["alertname"] != "TestAlert" || len(n.Alerts) != 1 {
		t.Fatalf("notification %+v", n)
	}
	a := n.Alerts[0]
	if a.Labels["instance"] != "gw-1" || a.Annotations["summary"] != "a test alert" || !a.StartsAt.Equal(startsAt) || a.Fingerprint == "" {
		t.Errorf("alert %+v", a)
	}
	held, err := am.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || held[0].Fingerprint != a.Fingerprint || held[0].Status.State != "active" {
		t.Errorf("alerts held: %+v", held)
	}
	recv.Quiet(t, 1, 2500*time.Millisecond) // beyond group_interval: no repeat

	if err := am.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := am.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Alerts live in memory: the sender resends; the notification log on disk dedups.
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}
	recv.Quiet(t, 1, 2500*time.Millisecond)

	alert.EndsAt = time.Now().UTC()
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}
	got = recv.WaitFor(t, 2, 20*time.Second)
	if r := got[1]; r.Status != "resolved" || len(r.Alerts) != 1 || r.Alerts[0].Fingerprint != a.Fingerprint || r.Alerts[0].EndsAt.IsZero() {
		t.Errorf("resolved notification %+v", r)
	}
}
