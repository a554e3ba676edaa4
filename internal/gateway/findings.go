package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/alerting"
	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/findings"
	"github.com/kaccess/kaccess/internal/rbacsync"
)

// DetectionsLease is the Lease under which one replica runs the scheduled detections and
// delivers their alerts (deploy/kubernetes/rbac.yaml allows it), apart from rbacsync's so
// that detections run whether or not an access policy is configured.
const DetectionsLease = "kaccess-detections"

// setupFindings builds the scheduler of detections (run by the leader only, see
// runFindings) and the findings store that every replica's AuditService reads.
func (g *Gateway) setupFindings() error {
	dc := &g.cfg.Detections
	store := &findings.Store{DB: g.audit.store, Database: g.auditDatabase()}
	var rules []findings.Rule
	if dc.Schedule {
		for _, name := range detect.Names() {
			interval, window, severity, on := dc.RuleFor(name)
			if !on {
				continue
			}
			cfg, err := dc.DetectConfig(name)
			if err != nil {
				return fmt.Errorf("detections.rules.%s: %w", name, err)
			}
			cfg.Database = g.auditDatabase()
			lib, err := cfg.Library()
			if err != nil {
				return fmt.Errorf("detections: %w", err)
			}
			i := slices.IndexFunc(lib, func(d detect.Detection) bool { return d.Name == name })
			rules = append(rules, findings.Rule{Detection: lib[i], Interval: interval, Window: window, Severity: severity})
		}
	}
	now := time.Now()
	for _, w := range dc.Warnings(now) {
		g.log.Warn("suppression ignored", "problem", w)
	}
	var sups []findings.Suppression
	for _, s := range dc.ActiveSuppressions(now) {
		sups = append(sups, findings.Suppression{
			Subject: s.Subject, Namespace: s.Namespace, Detection: s.Detection, Reason: s.Reason, Expires: s.ExpiresAt(),
		})
	}
	var deliver findings.Deliverer
	if ac := g.cfg.Alerting; ac.Enabled() {
		d := &alertDeliverer{cluster: ac.Cluster, externalURL: strings.TrimRight(ac.ExternalURL, "/")}
		for _, am := range ac.Alertmanagers {
			s, err := alerting.NewAlertmanager(alertEndpoint(am.URL, am.TLSCAFile, am.BearerTokenFile, am.Timeout.D()))
			if err != nil {
				return fmt.Errorf("alerting.alertmanagers: %w", err)
			}
			d.alertmanagers = append(d.alertmanagers, s)
		}
		if wh := ac.Webhook; wh != nil {
			s, err := alerting.NewWebhook(alertEndpoint(wh.URL, wh.TLSCAFile, wh.BearerTokenFile, wh.Timeout.D()))
			if err != nil {
				return fmt.Errorf("alerting.webhook: %w", err)
			}
			d.webhook = s
		}
		deliver = d
	}
	sched, err := findings.New(findings.Config{
		Store: store, Querier: g.audit.store, Rules: rules, Suppressions: sups, Recorder: g.audit.capture,
		Deliverer: deliver, ResendInterval: g.cfg.Alerting.ResendInterval.D(), Logger: g.log,
		// A receiver that is down is tried again at least every resend interval, so alerts
		// arrive soon after it is back.
		MaxBackoff: g.cfg.Alerting.ResendInterval.D(),
	})
	if err != nil {
		return err
	}
	g.findings = &scheduledFindings{store: store, sched: sched, on: dc.Schedule}
	return nil
}

// scheduledFindings is the scheduler and the store behind ListFindings/AcknowledgeFinding.
type scheduledFindings struct {
	store *findings.Store
	sched *findings.Scheduler
	on    bool
}

func alertEndpoint(u, ca, token string, timeout time.Duration) alerting.Endpoint {
	return alerting.Endpoint{URL: u, CAFile: ca, BearerTokenFile: token, Timeout: timeout}
}

// runFindings competes for DetectionsLease and, while leading, runs the detections and
// delivers alerts. The returned wait holds shutdown until the Lease is released.
func (g *Gateway) runFindings(ctx context.Context, identity string) (wait func()) {
	if g.findings == nil || !g.findings.on {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := rbacsync.RunElected(ctx, rbacsync.LeaderConfig{
			Client: g.defaultCluster().Client, Namespace: g.cfg.Access.Namespace, Name: DetectionsLease,
			Identity: identity, LeaseDuration: g.leaseTiming.lease, RenewDeadline: g.leaseTiming.renew,
			RetryPeriod: g.leaseTiming.retry,
		}, g.log, g.findings.sched.Run)
		if err != nil {
			g.log.Error("scheduled detections are not running", "error", err.Error())
		}
	}()
	return func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.log.Warn("scheduled detections did not stop within 10s; their Lease may be released late")
		}
	}
}

// leaseTiming overrides the Lease durations (tests of a failover); zero keeps the defaults.
type leaseTiming struct{ lease, renew, retry time.Duration }

// WithDetectionsLeaseTiming sets the durations of DetectionsLease (tests of a failover).
func WithDetectionsLeaseTiming(lease, renew, retry time.Duration) Option {
	return func(o *options) { o.leaseTiming = leaseTiming{lease, renew, retry} }
}

// AlertName is the alertname label of every finding's alert.
const AlertName = "KaccessDetection"

// alertDeliverer turns notifications into Alertmanager alerts and webhook messages.
type alertDeliverer struct {
	alertmanagers []*alerting.Alertmanager
	webhook       *alerting.Webhook
	cluster       string
	externalURL   string
}

func (d *alertDeliverer) Deliver(ctx context.Context, ns []findings.Notification) error {
	alerts := make([]alerting.Alert, 0, len(ns))
	var hooks []alerting.WebhookAlert
	for _, n := range ns {
		a := d.alert(n)
		alerts = append(alerts, a)
		// The webhook hears of a finding twice: when it fires and when it ends; repeats are
		// for Alertmanager, which would otherwise let the alert time out.
		if n.Kind != findings.NotifyRepeat {
			status := "firing"
			if n.Kind == findings.NotifyResolve {
				status = "resolved"
			}
			hooks = append(hooks, alerting.WebhookAlert{Status: status, ID: n.Finding.Fingerprint, Alert: a})
		}
	}
	var errs []error
	for _, am := range d.alertmanagers {
		errs = append(errs, am.Send(ctx, alerts))
	}
	if d.webhook != nil {
		errs = append(errs, d.webhook.Send(ctx, hooks, time.Now()))
	}
	return errors.Join(errs...)
}

// maxEvidenceInQuery bounds the event ids written into an alert's evidence filter.
const maxEvidenceInQuery = 20

// alert is a finding as an Alertmanager alert: labels that identify it (and route it), and
// annotations that say what it is and how to see its evidence.
func (d *alertDeliverer) alert(n findings.Notification) alerting.Alert {
	f := n.Finding
	cluster := f.Cluster
	if cluster == "" {
		cluster = d.cluster
	}
	labels := map[string]string{
		"alertname": AlertName, "detection": f.Detection, "severity": f.Severity, "cluster": cluster,
		"subject": f.Subject, "finding": f.Fingerprint,
	}
	if f.TechniqueID != "" {
		labels["technique"] = f.TechniqueID
	}
	if f.Scope != "" {
		labels["scope"] = f.Scope
	}
	filter := evidenceFilter(f.EventIDs)
	// The evidence lies between first and last seen; the range is widened by a minute each side.
	from := f.FirstSeen.Add(-time.Minute).UTC().Format(time.RFC3339)
	to := f.LastSeen.Add(time.Minute).UTC().Format(time.RFC3339)
	ann := map[string]string{
		"summary":        f.Summary,
		"evidence_query": filter,
		"first_seen":     f.FirstSeen.UTC().Format(time.RFC3339Nano),
		"last_seen":      f.LastSeen.UTC().Format(time.RFC3339Nano),
		"count":          strconv.FormatUint(f.Count, 10),
		"state":          string(f.State),
		"kaccess_search": "kaccess audit search --from " + from + " --to " + to + " --filter " + shellQuote(filter),
		"kaccess_ack":    "kaccess audit findings ack " + f.Fingerprint + " --reason '...'",
	}
	if f.TechniqueName != "" {
		ann["technique_name"] = f.TechniqueName
	}
	a := alerting.Alert{Labels: labels, Annotations: ann, StartsAt: f.CreatedAt, EndsAt: n.EndsAt}
	if d.externalURL != "" {
		a.GeneratorURL = d.externalURL + "/v1/findings?filter=" + url.QueryEscape(`fingerprint = "`+f.Fingerprint+`"`)
	}
	return a
}

// evidenceFilter is the AIP-160 filter that selects a finding's evidence events.
func evidenceFilter(ids []string) string {
	if len(ids) > maxEvidenceInQuery {
		ids = ids[:maxEvidenceInQuery]
	}
	if len(ids) == 0 {
		return ""
	}
	quoted := make([]string, len(ids))
	for i, id := range ids {
		quoted[i] = strconv.Quote(id)
	}
	return "event_id:(" + strings.Join(quoted, " ") + ")"
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ListFindings implements apiserver.Findings.
func (s *scheduledFindings) ListFindings(ctx context.Context, filter, state string, pageSize int, pageToken string) ([]apiserver.StoredFinding, string, error) {
	fs, next, err := s.store.List(ctx, findings.ListRequest{Filter: filter, State: findings.State(state), PageSize: pageSize, PageToken: pageToken})
	if err != nil {
		return nil, "", err
	}
	out := make([]apiserver.StoredFinding, len(fs))
	for i, f := range fs {
		out[i] = toAPIFinding(f)
	}
	return out, next, nil
}

// AcknowledgeFinding implements apiserver.Findings.
func (s *scheduledFindings) AcknowledgeFinding(ctx context.Context, id, actor, reason string, annotate func(*event.Event)) (apiserver.StoredFinding, error) {
	f, err := s.sched.Acknowledge(ctx, id, actor, reason, annotate)
	switch {
	case errors.Is(err, findings.ErrNotFound):
		return apiserver.StoredFinding{}, apiserver.ErrFindingNotFound
	case errors.Is(err, findings.ErrNotRecorded):
		return apiserver.StoredFinding{}, fmt.Errorf("%w: %w", apiserver.ErrChangeNotRecorded, err)
	case errors.Is(err, findings.ErrInvalid):
		return apiserver.StoredFinding{}, fmt.Errorf("%w: %s", apiserver.ErrFindingNotFiring, err.Error())
	case err != nil:
		return apiserver.StoredFinding{}, err
	}
	return toAPIFinding(f), nil
}

func toAPIFinding(f *findings.Finding) apiserver.StoredFinding {
	return apiserver.StoredFinding{
		ID: f.Fingerprint, Detection: f.Detection, Cluster: f.Cluster, Subject: f.Subject, Scope: f.Scope,
		Severity: f.Severity, TechniqueID: f.TechniqueID, TechniqueName: f.TechniqueName, Summary: f.Summary,
		State: string(f.State), FirstSeen: f.FirstSeen, LastSeen: f.LastSeen, Created: f.CreatedAt,
		Updated: f.UpdatedAt, Resolved: f.ResolvedAt, Count: int64(f.Count), EventIDs: f.EventIDs,
		Reason: f.Reason, Actor: f.Actor, Window: f.Window,
	}
}
