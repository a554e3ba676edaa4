package config

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/detect"
)

// Detections schedules the built-in detections (internal/audit/detect) on the leader replica
// and says what is not worth an alert.
type Detections struct {
	// Schedule runs the enabled detections on one replica (a Lease, kaccess-detections, in
	// access.namespace), stores their findings and delivers them (alerting). Default false:
	// detections then run only on demand (kaccess audit detect).
	Schedule bool `json:"schedule"`
	// Interval and Window are every detection's defaults: it runs every Interval over the
	// Window before (default 5m and 1h).
	Interval Duration `json:"interval"`
	Window   Duration `json:"window"`
	// Rules tune detections by name (kaccess audit detect --list shows them); a detection
	// not named runs with the defaults.
	Rules map[string]DetectionRule `json:"rules"`
	// ProtectedNamespaces and PrivilegedRoles override the detections' defaults (kube-system,
	// kube-public, kaccess-system; cluster-admin, admin, edit).
	ProtectedNamespaces []string `json:"protectedNamespaces"`
	PrivilegedRoles     []string `json:"privilegedRoles"`
	// Suppressions silence what they name: matching findings are stored as silenced and
	// never delivered.
	Suppressions []Suppression `json:"suppressions"`
}

// DetectionRule tunes one detection.
type DetectionRule struct {
	// Enabled: default true.
	Enabled *bool `json:"enabled"`
	// Interval and Window override the defaults of detections.
	Interval Duration `json:"interval"`
	Window   Duration `json:"window"`
	// Severity overrides the detection's: low, medium, high or critical.
	Severity string `json:"severity"`
	// Thresholds by name, e.g. minAuthFailures: 10 (each detection reads its own).
	Thresholds map[string]int `json:"thresholds"`
}

// On reports whether the rule leaves its detection enabled.
func (r DetectionRule) On() bool { return r.Enabled == nil || *r.Enabled }

// Suppression is a finding not worth an alert, as code: a subject or namespace pattern
// (globs as in path.Match, e.g. "ci-*"), optionally one detection, a reason and an expiry.
type Suppression struct {
	Subject   string `json:"subject"`
	Namespace string `json:"namespace"`
	Detection string `json:"detection"`
	Reason    string `json:"reason"`
	// Expires is an RFC 3339 time; past it the suppression is ignored (with a warning).
	Expires string `json:"expires"`
}

// ExpiresAt is the parsed Expires, zero when unset (validated).
func (s Suppression) ExpiresAt() time.Time {
	t, _ := time.Parse(time.RFC3339, s.Expires)
	return t
}

// Alerting delivers the findings of scheduled detections.
type Alerting struct {
	// Alertmanagers receive every alert (API v2, POST /api/v2/alerts); each one gets all.
	Alertmanagers []AlertReceiver `json:"alertmanagers"`
	// Webhook, if set, receives a JSON POST when a finding fires and when it ends.
	Webhook *AlertReceiver `json:"webhook"`
	// ResendInterval re-sends firing alerts; keep it below Alertmanager's resolve_timeout
	// (5m by default). Default 1m.
	ResendInterval Duration `json:"resendInterval"`
	// Cluster is the cluster label of the alerts; default the default cluster's name.
	Cluster string `json:"cluster"`
	// ExternalURL, if set, is the gateway's URL for people (generatorURL links to the
	// finding's REST resource under it).
	ExternalURL string `json:"externalURL"`
}

// AlertReceiver is an HTTP endpoint alerts are posted to.
type AlertReceiver struct {
	// URL: an Alertmanager's base URL (http://alertmanager:9093), or the webhook's full URL.
	URL string `json:"url"`
	// TLSCAFile verifies an https URL's certificate (system roots when empty).
	TLSCAFile string `json:"tlsCAFile"`
	// BearerTokenFile holds a token sent as Authorization: Bearer (re-read on each send).
	BearerTokenFile string `json:"bearerTokenFile"`
	// Timeout of one POST; default 10s.
	Timeout Duration `json:"timeout"`
}

func (d *Detections) setDefaults() {
	setDuration(&d.Interval, 5*time.Minute)
	setDuration(&d.Window, time.Hour)
}

func (a *Alerting) setDefaults(c *Config) {
	setDuration(&a.ResendInterval, time.Minute)
	if a.Cluster == "" {
		if dc := c.DefaultCluster(); dc != nil {
			a.Cluster = dc.Name
		}
	}
	for i := range a.Alertmanagers {
		setDuration(&a.Alertmanagers[i].Timeout, 10*time.Second)
	}
	if a.Webhook != nil {
		setDuration(&a.Webhook.Timeout, 10*time.Second)
	}
}

// Enabled reports whether any receiver is configured.
func (a *Alerting) Enabled() bool { return len(a.Alertmanagers) > 0 || a.Webhook != nil }

// DetectConfig is the detections' configuration for rule (or the defaults with ""), with
// the overrides of this file.
func (d *Detections) DetectConfig(rule string) (detect.Config, error) {
	c := detect.Config{ProtectedNamespaces: d.ProtectedNamespaces, PrivilegedRoles: d.PrivilegedRoles}
	if r, ok := d.Rules[rule]; ok && len(r.Thresholds) > 0 {
		return c.WithThresholds(rule, r.Thresholds)
	}
	return c, nil
}

// RuleFor returns the interval, window and severity of detection name.
func (d *Detections) RuleFor(name string) (interval, window time.Duration, severity string, enabled bool) {
	r := d.Rules[name]
	interval, window = d.Interval.D(), d.Window.D()
	if r.Interval > 0 {
		interval = r.Interval.D()
	}
	if r.Window > 0 {
		window = r.Window.D()
	}
	return interval, window, r.Severity, r.On()
}

// ActiveSuppressions are the suppressions not expired at now.
func (d *Detections) ActiveSuppressions(now time.Time) []Suppression {
	var out []Suppression
	for _, s := range d.Suppressions {
		if e := s.ExpiresAt(); s.Expires == "" || now.Before(e) {
			out = append(out, s)
		}
	}
	return out
}

// Warnings are what is valid but probably not meant: suppressions whose expiry has passed.
func (d *Detections) Warnings(now time.Time) []string {
	var out []string
	for i, s := range d.Suppressions {
		if s.Expires != "" && !now.Before(s.ExpiresAt()) {
			out = append(out, fmt.Sprintf("detections.suppressions[%d]: expired at %s and is ignored; remove it", i, s.Expires))
		}
	}
	return out
}

var severities = []string{"low", "medium", "high", "critical"}

func (d *Detections) validate(p *problems) {
	names := detect.Names()
	checkEvery := func(path string, dur Duration, min time.Duration) {
		if dur.D() < min {
			p.add(path, "must be at least %s, got %s", min, dur.D())
		}
	}
	checkEvery("detections.interval", d.Interval, time.Second)
	checkEvery("detections.window", d.Window, time.Second)
	keys := make([]string, 0, len(d.Rules))
	for k := range d.Rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		r := d.Rules[name]
		base := "detections.rules." + name
		if !slices.Contains(names, name) {
			p.add(base, "no detection has this name; the detections are %s", strings.Join(names, ", "))
			continue
		}
		if r.Interval != 0 {
			checkEvery(base+".interval", r.Interval, time.Second)
		}
		if r.Window != 0 {
			checkEvery(base+".window", r.Window, time.Second)
		}
		if r.Severity != "" && !slices.Contains(severities, r.Severity) {
			p.add(base+".severity", "must be one of %s, got %q", strings.Join(severities, ", "), r.Severity)
		}
		for k, v := range r.Thresholds {
			if v <= 0 {
				p.add(base+".thresholds."+k, "must be positive, got %d", v)
			}
		}
		if _, err := d.DetectConfig(name); err != nil {
			p.add(base+".thresholds", "%v", err)
		}
	}
	if _, err := d.DetectConfig(""); err != nil {
		p.add("detections", "%v", err)
	}
	for i, s := range d.Suppressions {
		base := fmt.Sprintf("detections.suppressions[%d]", i)
		if s.Subject == "" && s.Namespace == "" {
			p.add(base, "name a subject or a namespace pattern: a suppression of everything would silence the detections")
		}
		for field, pat := range map[string]string{"subject": s.Subject, "namespace": s.Namespace} {
			if pat == "" {
				continue
			}
			if _, err := path.Match(pat, ""); err != nil {
				p.add(base+"."+field, "not a valid pattern %q: %v", pat, err)
			}
			if pat == "*" {
				p.add(base+"."+field, `"*" matches everything: name what is to be silenced`)
			}
		}
		if s.Detection != "" && !slices.Contains(names, s.Detection) {
			p.add(base+".detection", "no detection %q; the detections are %s", s.Detection, strings.Join(names, ", "))
		}
		if strings.TrimSpace(s.Reason) == "" {
			p.add(base+".reason", "required: say why this is not worth an alert")
		}
		if s.Expires != "" {
			if _, err := time.Parse(time.RFC3339, s.Expires); err != nil {
				p.add(base+".expires", "must be an RFC 3339 time such as 2027-01-31T00:00:00Z, got %q", s.Expires)
			}
		}
	}
}

func (a *Alerting) validate(p *problems, d *Detections) {
	if a.Enabled() && !d.Schedule {
		p.add("alerting", "has receivers but detections.schedule is false: nothing would be delivered; set detections.schedule: true")
	}
	if d := a.ResendInterval.D(); d < time.Second || d > time.Hour {
		p.add("alerting.resendInterval", "must be between 1s and 1h (below Alertmanager's resolve_timeout), got %s", d)
	}
	check := func(base string, r AlertReceiver) {
		u, err := url.Parse(r.URL)
		switch {
		case r.URL == "":
			p.add(base+".url", "required")
		case err != nil:
			p.add(base+".url", "not a URL: %v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			p.add(base+".url", "must be an http:// or https:// URL, got %q", r.URL)
		case u.Host == "":
			p.add(base+".url", "has no host: %q", r.URL)
		case u.User != nil:
			p.add(base+".url", "must not hold credentials; use bearerTokenFile")
		}
		if r.TLSCAFile != "" {
			if _, err := os.Stat(r.TLSCAFile); err != nil {
				p.add(base+".tlsCAFile", "cannot be read: %v", err)
			}
			if u != nil && u.Scheme != "https" {
				p.add(base+".tlsCAFile", "only used with an https:// URL")
			}
		}
		if r.BearerTokenFile != "" {
			if _, err := os.Stat(r.BearerTokenFile); err != nil {
				p.add(base+".bearerTokenFile", "cannot be read: %v", err)
			}
		}
		if r.Timeout.D() <= 0 {
			p.add(base+".timeout", "must be positive, got %s", r.Timeout.D())
		}
	}
	for i, am := range a.Alertmanagers {
		check(fmt.Sprintf("alerting.alertmanagers[%d]", i), am)
	}
	if a.Webhook != nil {
		check("alerting.webhook", *a.Webhook)
	}
	if a.ExternalURL != "" {
		if u, err := url.Parse(a.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("alerting.externalURL", "must be an http(s) URL, got %q", a.ExternalURL)
		}
	}
}
