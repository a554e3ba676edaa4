package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
stateDir: /tmp/k
clusters:
  - name: prod
    kubeconfig: /k
`

func TestDetectionsDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(minimal + `
detections:
  schedule: true
  rules:
    auth-failure-burst: {interval: 30s, thresholds: {minAuthFailures: 10}, severity: high}
    unusual-hours: {enabled: false}
alerting:
  alertmanagers: [{url: "http://alertmanager:9093"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Detections
	if iv, w, sev, on := d.RuleFor("auth-failure-burst"); iv != 30*time.Second || w != time.Hour || sev != "high" || !on {
		t.Errorf("auth-failure-burst: %s %s %s %v", iv, w, sev, on)
	}
	if iv, w, _, on := d.RuleFor("mass-delete"); iv != 5*time.Minute || w != time.Hour || !on {
		t.Errorf("mass-delete defaults: %s %s %v", iv, w, on)
	}
	if _, _, _, on := d.RuleFor("unusual-hours"); on {
		t.Error("unusual-hours is disabled in the file")
	}
	dc, err := d.DetectConfig("auth-failure-burst")
	if err != nil || dc.MinAuthFailures != 10 {
		t.Errorf("thresholds: %+v %v", dc, err)
	}
	if c.Alerting.ResendInterval.D() != time.Minute || c.Alerting.Cluster != "prod" || c.Alerting.Alertmanagers[0].Timeout.D() != 10*time.Second {
		t.Errorf("alerting defaults: %+v", c.Alerting)
	}
}

func TestDetectionsListsEveryProblem(t *testing.T) {
	t.Parallel()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse([]byte(minimal + `
detections:
  interval: -1s
  window: 500ms
  rules:
    no-such-detection: {}
    mass-delete: {severity: urgent, thresholds: {minAuthFailures: 3, minDeletes: -1}}
  suppressions:
    - {detection: exec-protected-namespace, reason: everything}
    - {subject: "[", reason: bad pattern}
    - {subject: "*", reason: all}
    - {subject: ci-bot, detection: nope}
    - {namespace: ci, reason: x, expires: tomorrow}
alerting:
  resendInterval: 2h
  alertmanagers:
    - {url: "ftp://am"}
    - {url: "http://user:pw@am:9093"}
    - {url: "http://am:9093", tlsCAFile: ` + ca + `, bearerTokenFile: /no/such/token}
  webhook: {url: ""}
`))
	v, ok := AsValidationError(err)
	if !ok {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	want := []string{
		"alerting: has receivers but detections.schedule is false",
		"alerting.resendInterval: must be between 1s and 1h",
		"alerting.alertmanagers[0].url: must be an http:// or https:// URL",
		"alerting.alertmanagers[1].url: must not hold credentials",
		"alerting.alertmanagers[2].tlsCAFile: only used with an https:// URL",
		"alerting.alertmanagers[2].bearerTokenFile: cannot be read",
		"alerting.webhook.url: required",
		"detections.interval: must be at least 1s",
		"detections.window: must be at least 1s",
		"detections.rules.no-such-detection: no detection has this name",
		"detections.rules.mass-delete.severity: must be one of low, medium, high, critical",
		"detections.rules.mass-delete.thresholds.minDeletes: must be positive",
		"detections.rules.mass-delete.thresholds: mass-delete reads no threshold minAuthFailures",
		"detections.suppressions[0]: name a subject or a namespace pattern",
		"detections.suppressions[1].subject: not a valid pattern",
		"detections.suppressions[2].subject: \"*\" matches everything",
		"detections.suppressions[3].detection: no detection \"nope\"",
		"detections.suppressions[3].reason: required",
		"detections.suppressions[4].expires: must be an RFC 3339 time",
	}
	msg := v.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if len(v.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(v.Problems), len(want), msg)
	}
}

func TestExpiredSuppressionIsWarnedAndIgnored(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(minimal + `
detections:
  suppressions:
    - {subject: ci-bot, reason: CI, expires: "2020-01-01T00:00:00Z"}
    - {namespace: sandbox, reason: playground, expires: "2999-01-01T00:00:00Z"}
    - {subject: "load-*", reason: load tests}
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	active := c.Detections.ActiveSuppressions(now)
	if len(active) != 2 || active[0].Namespace != "sandbox" || active[1].Subject != "load-*" {
		t.Errorf("active suppressions %+v, want the two not expired", active)
	}
	if w := c.Detections.Warnings(now); len(w) != 1 || !strings.Contains(w[0], "detections.suppressions[0]: expired") {
		t.Errorf("warnings %q", w)
	}
}
