package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/testenv"
)

// The rule file passes `promtool check rules` and its unit tests (a firing and a quiet case
// per rule), with the real promtool `make tools` builds (a missing one fails, never skips).
func TestPrometheusRules(t *testing.T) {
	promtool := testenv.ToolBinary(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "kaccess-alerts.yaml"},
		{"test", "rules", "kaccess-alerts_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert of the rule file has a severity the example Alertmanager config routes: critical
// pages, warning makes a ticket.
func TestAlertmanagerConfigRoutesBySeverity(t *testing.T) {
	amtool := testenv.ToolBinary(t, "amtool")
	config := filepath.Join("alertmanager", "alertmanager.yaml")
	if out, err := exec.Command(amtool, "check-config", config).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	receiverOf := map[string]string{"critical": "page", "warning": "ticket"}
	for _, r := range ruleAlerts(t) {
		want, ok := receiverOf[r.severity]
		if !ok {
			t.Errorf("alert %s: severity %q, want critical or warning", r.name, r.severity)
			continue
		}
		out, err := exec.Command(amtool, "config", "routes", "test", "--config.file="+config,
			"alertname="+r.name, "severity="+r.severity, "instance=gw-1:9090").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("alert %s (%s) routes to %q (%v), want %s", r.name, r.severity, got, err, want)
		}
	}
}

// Findings of the scheduled detections (a detection label) go to the security receivers,
// paging for critical and high ones, whatever else they carry.
func TestAlertmanagerConfigRoutesFindingsToSecurity(t *testing.T) {
	amtool := testenv.ToolBinary(t, "amtool")
	config := filepath.Join("alertmanager", "alertmanager.yaml")
	for severity, want := range map[string]string{"critical": "security-page", "high": "security-page", "medium": "security-ticket", "low": "security-ticket"} {
		out, err := exec.Command(amtool, "config", "routes", "test", "--config.file="+config,
			"detection=secret-read-burst", "severity="+severity, "cluster=prod", "subject=alice").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("a %s finding routes to %q (%v), want %s", severity, got, err, want)
		}
	}
}

type ruleAlert struct{ name, severity string }

func ruleAlerts(t *testing.T) []ruleAlert {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "kaccess-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert  string            `json:"alert"`
				Labels map[string]string `json:"labels"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []ruleAlert
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, ruleAlert{r.Alert, r.Labels["severity"]})
		}
	}
	if len(out) == 0 {
		t.Fatal("no alerts in the rule file")
	}
	return out
}

// testAlertmanagerConfig is deploy/alertmanager/alertmanager.yaml with only the receivers' URLs
// (to recv, path /<receiver>) and the timers made short; routes and inhibitions are the file's.
func testAlertmanagerConfig(t *testing.T, recv *testenv.WebhookReceiver) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("alertmanager", "alertmanager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var shorten func(route map[string]any)
	shorten = func(route map[string]any) {
		for key, d := range map[string]string{"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"} {
			if _, ok := route[key]; ok {
				route[key] = d
			}
		}
		routes, _ := route["routes"].([]any)
		for _, r := range routes {
			shorten(r.(map[string]any))
		}
	}
	shorten(cfg["route"].(map[string]any))
	receivers, _ := cfg["receivers"].([]any)
	for _, r := range receivers {
		r := r.(map[string]any)
		hooks, _ := r["webhook_configs"].([]any)
		if len(hooks) == 0 {
			t.Fatalf("receiver %v has no webhook_configs: the test reroutes only webhooks", r["name"])
		}
		for _, h := range hooks {
			h.(map[string]any)["url"] = fmt.Sprintf("%s/%s", recv.URL, r["name"])
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// alert is one firing alert as Prometheus posts it (StartsAt is set when it is posted).
func alert(name, severity, instance string) testenv.PostableAlert {
	return testenv.PostableAlert{
		Labels:      map[string]string{"alertname": name, "severity": severity, "instance": instance, "job": "kaccess"},
		Annotations: map[string]string{"summary": name + " on " + instance},
	}
}

// finding is a scheduled detection's finding as the gateway delivers it (its labels).
func finding(detection, severity, subject string) testenv.PostableAlert {
	return testenv.PostableAlert{Labels: map[string]string{"alertname": "KaccessFinding", "detection": detection,
		"severity": severity, "cluster": "prod", "subject": subject}}
}

// delivered is "<receiver path> <status> <alertnames>" per notification, sorted.
func delivered(ns []testenv.WebhookNotification) []string {
	var out []string
	for _, n := range ns {
		var names []string
		for _, a := range n.Alerts {
			names = append(names, a.Labels["alertname"]+"@"+a.Labels["instance"]+a.Labels["subject"])
		}
		slices.Sort(names)
		out = append(out, n.Path+" "+n.Status+" "+strings.Join(names, ","))
	}
	slices.Sort(out)
	return out
}

// The audit cascade reaches people once: while the spool rides out a store outage, the store
// alert is the one ticket (it inhibits the lag and the filling spool); once the spool is full
// and requests are refused, the page is the one notification of the cascade. Alerts outside
// the cascade, and another gateway's, are not inhibited. A real Alertmanager runs the example
// config, with only receiver URLs and timers changed.
func TestAlertmanagerInhibitsTheAuditCascade(t *testing.T) {
	cascade := []testenv.PostableAlert{
		alert("KaccessAuditStoreDown", "warning", "gw-1:9090"),
		alert("KaccessAuditShipperLagging", "warning", "gw-1:9090"),
		alert("KaccessAuditSpoolFilling", "warning", "gw-1:9090"),
	}
	tests := []struct {
		name      string
		alerts    []testenv.PostableAlert
		want      []string
		inhibited int
	}{
		{
			name: "store down, spool riding it out",
			alerts: append(slices.Clone(cascade),
				alert("KaccessLoginFailureBurst", "warning", "gw-1:9090"), // not the cascade's
				alert("KaccessAuditSpoolFilling", "warning", "gw-2:9090"), // another gateway's
			),
			want: []string{
				"/ticket firing KaccessAuditSpoolFilling@gw-2:9090",
				"/ticket firing KaccessAuditStoreDown@gw-1:9090",
				"/ticket firing KaccessLoginFailureBurst@gw-1:9090",
			},
			inhibited: 2,
		},
		{
			name: "spool full, requests refused",
			alerts: append(slices.Clone(cascade),
				alert("KaccessAuditRefusingRequests", "critical", "gw-1:9090"),
				alert("KaccessCertificateExpiresSoon", "warning", "gw-1:9090"), // not the cascade's
			),
			want: []string{
				"/page firing KaccessAuditRefusingRequests@gw-1:9090",
				"/ticket firing KaccessCertificateExpiresSoon@gw-1:9090",
			},
			inhibited: 3,
		},
		{
			name: "findings: one notification per detection and cluster",
			alerts: []testenv.PostableAlert{
				finding("secret-read-burst", "high", "alice"), finding("secret-read-burst", "high", "bob"),
				finding("exec-into-kube-system", "medium", "carol"),
			},
			want: []string{
				"/security-page firing KaccessFinding@alice,KaccessFinding@bob",
				"/security-ticket firing KaccessFinding@carol",
			},
		},
		{
			name:      "store up but slow: the lag explains the filling spool",
			alerts:    []testenv.PostableAlert{cascade[1], cascade[2]},
			want:      []string{"/ticket firing KaccessAuditShipperLagging@gw-1:9090"},
			inhibited: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			recv := testenv.StartWebhookReceiver(t)
			am := testenv.MustStartAlertmanager(t, testAlertmanagerConfig(t, recv))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// They start now: Alertmanager flushes a new group at once for an alert that started
			// more than group_wait ago, and the test posts cause and consequences together,
			// where in an outage the cause fires minutes before them.
			posted := slices.Clone(tt.alerts)
			for i := range posted {
				posted[i].StartsAt = time.Now()
			}
			if err := am.PostAlerts(ctx, posted...); err != nil {
				t.Fatal(err)
			}
			recv.WaitFor(t, len(tt.want), 30*time.Second)
			recv.Quiet(t, len(tt.want), 3*time.Second) // three group_intervals: nothing more comes
			if got := delivered(recv.Notifications()); !slices.Equal(got, tt.want) {
				t.Fatalf("notifications:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			// Alertmanager holds the inhibited alerts as suppressed, not dropped: they show in
			// its UI and come back if the cause ends first.
			held, err := am.Alerts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(held) != len(tt.alerts) {
				t.Fatalf("Alertmanager holds %d alerts, want all %d posted", len(held), len(tt.alerts))
			}
			suppressed := 0
			for _, a := range held {
				if a.Status.State == "suppressed" && len(a.Status.InhibitedBy) > 0 {
					suppressed++
				}
			}
			if suppressed != tt.inhibited {
				t.Errorf("%d alerts inhibited, want %d", suppressed, tt.inhibited)
			}
		})
	}
}
