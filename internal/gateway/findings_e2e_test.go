package gateway

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// alertmanagerOutage is how long Alertmanager is down in TestScheduledDetectionsAlertOnce;
// KACCESS_TEST_ALERTMANAGER_OUTAGE (a Go duration) overrides it.
func alertmanagerOutage(t *testing.T) time.Duration {
	if v := os.Getenv("KACCESS_TEST_ALERTMANAGER_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KACCESS_TEST_ALERTMANAGER_OUTAGE=%q: %v", v, err)
		}
		return d
	}
	return 30 * time.Second
}

// TestScheduledDetectionsAlertOnce plants 403 bursts through the gateway and follows their
// findings to a real Alertmanager and a webhook receiver behind it: one notification per
// finding, none more for reruns and a leader failover, a resolved notification when the
// finding resolves, nothing lost while Alertmanager is down, and a suppression that silences
// only the subject it names.
func TestScheduledDetectionsAlertOnce(t *testing.T) {
	recv := testenv.StartWebhookReceiver(t)
	// One group per finding's subject, flushed quickly; repeat_interval far beyond the test, so
	// any second notification of a group would be a duplicate sent by the gateway.
	am := testenv.MustStartAlertmanager(t, []byte(fmt.Sprintf(`
route:
  receiver: security
  group_by: [alertname, detection, subject]
  group_wait: 300ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: security
    webhook_configs:
      - url: %s/security
        send_resolved: true
`, recv.URL)))

	lib, helper := testenv.ChDB(t)
	ctx := context.Background()
	store, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// Both gateways write to and read from the one store, as replicas share a ClickHouse.
	// A gateway's shipper closes its store when it stops; this one outlives them.
	shared := WithAuditStore(func(context.Context) (ship.Sink, error) { return keptOpen{store}, nil })

	const window = 20 * time.Second
	configure := func(c *config.Config) {
		c.Audit.AuditorGroups = []string{"audit:security"}
		rules := map[string]config.DetectionRule{}
		off := false
		for _, name := range detect.Names() {
			rules[name] = config.DetectionRule{Enabled: &off}
		}
		rules["auth-failure-burst"] = config.DetectionRule{Thresholds: map[string]int{"minAuthFailures": 5}}
		c.Detections = config.Detections{
			Schedule: true, Interval: config.Duration(time.Second), Window: config.Duration(window), Rules: rules,
			Suppressions: []config.Suppression{{Subject: "ci-*", Detection: "auth-failure-burst", Reason: "the CI job probes RBAC on purpose"}},
		}
		c.Alerting = config.Alerting{
			Alertmanagers:  []config.AlertReceiver{{URL: am.URL}},
			ResendInterval: config.Duration(2 * time.Second),
		}
	}
	timing := WithDetectionsLeaseTiming(4*time.Second, 3*time.Second, 500*time.Millisecond)
	gwA := startGateway(t, configure, shared, timing)
	waitLeading(t, gwA)
	gwB := startGateway(t, configure, shared, timing) // follower until A goes

	burst := func(g *testGateway, user string) {
		t.Helper()
		cs := g.client(t, g.mint(t, user))
		for range 8 {
			_, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			if err == nil || !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("%s listed kube-system secrets: %v; want 403", user, err)
			}
		}
	}
	burst(gwA, "mallory")
	burst(gwA, "ci-bot")

	got := recv.WaitFor(t, 1, 60*time.Second)
	n := got[0]
	if n.Status != "firing" || len(n.Alerts) != 1 || n.GroupLabels["subject"] != "mallory" {
		t.Fatalf("first notification %s", describe(got))
	}
	a := n.Alerts[0]
	for k, want := range map[string]string{"alertname": AlertName, "detection": "auth-failure-burst", "severity": "medium", "cluster": "test", "subject": "mallory"} {
		if a.Labels[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, a.Labels[k], want, a.Labels)
		}
	}
	if s := a.Annotations["kaccess_search"]; !strings.HasPrefix(s, "kaccess audit search --from ") || !strings.Contains(s, `--filter 'event_id:("`) {
		t.Errorf("kaccess_search annotation %q", s)
	}
	if !strings.Contains(a.Annotations["summary"], "mallory was refused 8 time(s)") || a.Annotations["first_seen"] == "" {
		t.Errorf("annotations %v", a.Annotations)
	}
	// The evidence query finds exactly the planted requests.
	auditor := gwA.mint(t, "sam", "audit:security")
	code, out := api(t, gwA, "GET", "/v1/auditevents?filter="+url.QueryEscape(a.Annotations["evidence_query"]), auditor, nil)
	if evs, _ := out["events"].([]any); code != 200 || len(evs) != 8 {
		t.Errorf("evidence query: %d, %d events, want 8: %v", code, len(evs), out)
	}

	// The findings: mallory firing, ci-bot silenced by its suppression; alice, no auditor, is refused.
	findings := func(g *testGateway, filter string) []map[string]any {
		t.Helper()
		code, out := api(t, g, "GET", "/v1/findings?filter="+url.QueryEscape(filter), g.mint(t, "sam", "audit:security"), nil)
		if code != 200 {
			t.Fatalf("ListFindings: %d %v", code, out)
		}
		var fs []map[string]any
		for _, f := range asList(out["findings"]) {
			fs = append(fs, f.(map[string]any))
		}
		return fs
	}
	states := func(g *testGateway) map[string]string {
		m := map[string]string{}
		for _, f := range findings(g, "") {
			m[f["subject"].(string)] = f["state"].(string)
		}
		return m
	}
	if st := states(gwB); st["mallory"] != "firing" || st["ci-bot"] != "silenced" || len(st) != 2 {
		t.Fatalf("findings %v, want mallory firing and ci-bot silenced", st)
	}
	if code, _ := api(t, gwA, "GET", "/v1/findings", gwA.mint(t, "alice"), nil); code != 403 {
		t.Errorf("ListFindings by a non-auditor: %d, want 403", code)
	}

	// Reruns every second, then a leader failover: A stops and releases the Lease, B takes
	// over, re-sends what is firing, and Alertmanager gets nothing new to notify.
	recv.Quiet(t, 1, 3*time.Second)
	gwA.stop()
	waitLeading(t, gwB)
	recv.Quiet(t, 1, 5*time.Second)

	// mallory's requests leave the window: the finding resolves and the alert ends.
	got = recv.WaitFor(t, 2, window+30*time.Second)
	if n := got[1]; n.Status != "resolved" || n.GroupLabels["subject"] != "mallory" || len(n.Alerts) != 1 {
		t.Fatalf("second notification %s, want mallory resolved", describe(got))
	}
	// Ended by the gateway at the resolution, not by Alertmanager timing the alert out.
	res := findings(gwB, `subject = "mallory"`)
	if len(res) != 1 || res[0]["state"] != "resolved" {
		t.Fatalf("mallory's finding %v, want resolved", res)
	}
	resolvedAt, _ := time.Parse(time.RFC3339Nano, res[0]["resolveTime"].(string))
	if end := got[1].Alerts[0].EndsAt; !end.Equal(resolvedAt) {
		t.Errorf("resolved alert ends at %s, want the finding's resolve time %s", end, resolvedAt)
	}

	// Alertmanager is down while trudy's burst is found: the alert waits in the store and
	// arrives once Alertmanager is back.
	if err := am.Stop(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	burst(gwB, "trudy")
	outage := alertmanagerOutage(t)
	waitFinding(t, gwB, gwB.mint(t, "sam", "audit:security"), "trudy", "firing")
	time.Sleep(time.Until(downAt.Add(outage)))
	if err := am.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got = recv.WaitFor(t, 3, 30*time.Second)
	if n := got[2]; n.Status != "firing" || n.GroupLabels["subject"] != "trudy" {
		t.Fatalf("third notification %s, want trudy firing", describe(got))
	}
	// trudy's requests left the window too (during the outage, at its default length): the
	// alert that went out late ends as well.
	got = recv.WaitFor(t, 4, window+30*time.Second)
	if n := got[3]; n.Status != "resolved" || n.GroupLabels["subject"] != "trudy" {
		t.Fatalf("fourth notification %s, want trudy resolved", describe(got))
	}
	if !strings.Contains(gwB.logs.String(), "alert delivery failed; retrying") {
		t.Error("no failed delivery was logged while Alertmanager was down")
	}
	recv.Quiet(t, 4, 4*time.Second)

	// Every change of state is on the audit record.
	rows, err := store.QueryStrings(ctx, "SELECT concat(verb, ':', extra['subject']) FROM kaccess.audit_events WHERE kind = 'finding' ORDER BY time")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"firing:mallory", "silenced:ci-bot", "resolved:mallory", "firing:trudy", "resolved:trudy"} {
		if c := countOf(rows, want); c != 1 {
			t.Errorf("audit events %q: %d, want 1 (all: %v)", want, c, rows)
		}
	}
}

// keptOpen is a store whose Close does nothing.
type keptOpen struct{ *chdb.Store }

func (keptOpen) Close() error { return nil }

// waitFinding waits until subject has a finding in state.
func waitFinding(t *testing.T, g *testGateway, auditor, subject, state string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, out := api(t, g, "GET", "/v1/findings?filter="+url.QueryEscape(`subject = "`+subject+`" AND state = "`+state+`"`), auditor, nil)
		if len(asList(out["findings"])) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s finding for %s after 30s: %v", state, subject, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func countOf(rows []string, s string) int {
	n := 0
	for _, r := range rows {
		if r == s {
			n++
		}
	}
	return n
}

// waitLeading waits until g leads the detections' Lease.
func waitLeading(t *testing.T, g *testGateway) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	leads := func() bool {
		for _, line := range strings.Split(g.logs.String(), "\n") {
			if strings.Contains(line, `"msg":"leading"`) && strings.Contains(line, `"lease":"kaccess-system/`+DetectionsLease+`"`) {
				return true
			}
		}
		return false
	}
	for !leads() {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not take the %s Lease", DetectionsLease)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(ns []testenv.WebhookNotification) string {
	var b strings.Builder
	for _, n := range ns {
		fmt.Fprintf(&b, "\n  %s %s groups=%v", n.Path, n.Status, n.GroupLabels)
		for _, a := range n.Alerts {
			fmt.Fprintf(&b, " [%s %v]", a.Status, a.Labels)
		}
	}
	return b.String()
}
