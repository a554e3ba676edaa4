package detect

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Config tunes the detections. The zero Config uses the defaults.
type Config struct {
	// Database holds audit_events and audit_first_seen (schema.Options.Database).
	Database string
	// ProtectedNamespaces are where exec, attach and port-forward are findings, and where a
	// first read of secrets is high severity. Default: kube-system, kube-public, kaccess-system.
	ProtectedNamespaces []string
	// PrivilegedRoles are the ClusterRoles whose bindings are findings. Default: cluster-admin,
	// admin, edit (the user-facing roles that reach secrets and workloads).
	PrivilegedRoles []string
	// History is how far before the window a user's baseline reaches (hours, sources, rates).
	// Default 28 days, the memory security teams use for "new source IP".
	History time.Duration
	// MinHistoryDays is how many days with activity in History a user needs before their
	// hours and sources are judged: with less, everything would look new. Default 7.
	MinHistoryDays int
	// Bucket is the interval bursts are counted in. Default 5 minutes.
	Bucket time.Duration
	// BurstFactor: a bucket is a burst when it holds at least BurstFactor times the subject's
	// own highest bucket in History (and at least the Min* threshold). Default 2.
	BurstFactor int
	// MinAuthFailures is the fewest 401/403 in a bucket that make a burst. Default 20.
	MinAuthFailures int
	// MinDeletes is the fewest deletes in a bucket that make a mass delete. Default 30.
	MinDeletes int
	// MinSecretNamespaces is the fewest namespaces whose secrets one user lists or watches in
	// a bucket that make a burst. Default 5.
	MinSecretNamespaces int
	// MinUnusualEvents is the fewest requests at unusual hours that make a finding. Default 5.
	MinUnusualEvents int
	// MinGuardrailViolations is the fewest requests of one subject refused by admission
	// policies in the window that make a finding. Default 3.
	MinGuardrailViolations int
	// MaxEvidence caps the event ids of a finding (the earliest are kept). Default 100.
	MaxEvidence int
}

// Default values of Config.
var (
	DefaultProtectedNamespaces = []string{"kube-system", "kube-public", "kaccess-system"}
	DefaultPrivilegedRoles     = []string{"cluster-admin", "admin", "edit"}
)

func (c Config) withDefaults() (Config, error) {
	if c.Database == "" {
		c.Database = schema.DefaultDatabase
	}
	if c.ProtectedNamespaces == nil {
		c.ProtectedNamespaces = DefaultProtectedNamespaces
	}
	if c.PrivilegedRoles == nil {
		c.PrivilegedRoles = DefaultPrivilegedRoles
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.History == 0 {
		c.History = 28 * 24 * time.Hour
	}
	if c.Bucket == 0 {
		c.Bucket = 5 * time.Minute
	}
	def(&c.MinHistoryDays, 7)
	def(&c.BurstFactor, 2)
	def(&c.MinAuthFailures, 20)
	def(&c.MinDeletes, 30)
	def(&c.MinSecretNamespaces, 5)
	def(&c.MinUnusualEvents, 5)
	def(&c.MinGuardrailViolations, 3)
	def(&c.MaxEvidence, 100)

	var errs []error
	if !ident.MatchString(c.Database) {
		errs = append(errs, fmt.Errorf("database %q: use letters, digits and underscores, not starting with a digit", c.Database))
	}
	for _, ns := range c.ProtectedNamespaces {
		if !dnsLabel.MatchString(ns) {
			errs = append(errs, fmt.Errorf("protected namespace %q is not a Kubernetes namespace name (lower-case letters, digits, '-')", ns))
		}
	}
	for _, r := range c.PrivilegedRoles {
		if r == "" || strings.Contains(r, ",") {
			errs = append(errs, fmt.Errorf("privileged role %q: a ClusterRole name, not empty and without ','", r))
		}
	}
	if c.History < 24*time.Hour {
		errs = append(errs, fmt.Errorf("history %s: at least a day, or baselines mean nothing", c.History))
	}
	if c.Bucket < time.Second || c.Bucket%time.Second != 0 {
		errs = append(errs, fmt.Errorf("bucket %s: a whole number of seconds, at least one", c.Bucket))
	}
	for name, v := range map[string]int{
		"min history days": c.MinHistoryDays, "burst factor": c.BurstFactor, "min auth failures": c.MinAuthFailures,
		"min deletes": c.MinDeletes, "min secret namespaces": c.MinSecretNamespaces,
		"min unusual events": c.MinUnusualEvents, "max evidence": c.MaxEvidence,
		"min guardrail violations": c.MinGuardrailViolations,
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must be positive (zero takes the default)", name, v))
		}
	}
	return c, errors.Join(errs...)
}

var (
	ident    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// Library returns the detections with this configuration, sorted by name, or every problem of
// the configuration at once.
func (c Config) Library() ([]Detection, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("detections configuration: %w", err)
	}
	lib := []Detection{
		c.secretFirstAccess(),
		c.execProtected(),
		c.privilegedBinding(),
		c.impersonationRefused(),
		c.authFailureBurst(),
		c.unusualHours(),
		c.newSource(),
		c.massDelete(),
		c.secretListBurst(),
		c.grantOutOfScope(),
		c.anonymous(),
		c.identitySmuggling(),
		c.gatewayBypass(),
		c.unknownClient(),
		c.guardrailViolations(),
	}
	slices.SortFunc(lib, func(a, b Detection) int { return strings.Compare(a.Name, b.Name) })
	return lib, nil
}

// sql fills in what a query's text may hold besides placeholders: the tables, from the
// validated database name, and the evidence expression, from a validated number. Nothing
// that comes from a request or from the data is ever written into the text.
func (c Config) sql(text string) string {
	db := "`" + c.Database + "`."
	n := strconv.Itoa(c.MaxEvidence)
	return strings.NewReplacer(
		"$events", db+"`"+schema.Table+"`",
		"$rollup", db+"`"+schema.RollupTable+"`",
		// The earliest events, by time: what an analyst opens first. Queries that count in
		// buckets keep (time, event_id) pairs per bucket and merge them per finding.
		"$evidence_pairs", "groupArraySorted("+n+")((time, event_id))",
		"$evidence_merge", "arrayMap(x -> x.2, arraySlice(arraySort(arrayFlatten(groupArray(pairs))), 1, "+n+"))",
		"$evidence", "arrayMap(x -> x.2, groupArraySorted("+n+")((time, event_id)))",
		"$window", "time >= {from:DateTime64(6, 'UTC')} AND time < {to:DateTime64(6, 'UTC')}",
		"$history", "time >= {history_from:DateTime64(6, 'UTC')} AND time < {from:DateTime64(6, 'UTC')}",
		"$limit", "LIMIT "+strconv.Itoa(maxFindings),
	).Replace(text)
}

// params are the parameters every query may use: the window and the start of the history
// before it; more may be added by pairs.
func (c Config) params(w Window, kv ...string) map[string]string {
	p := map[string]string{
		"from":         formatTime(w.From),
		"to":           formatTime(w.To),
		"history_from": formatTime(w.From.Add(-c.History)),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		p[kv[i]] = kv[i+1]
	}
	return p
}

func itoa(n int) string { return strconv.Itoa(n) }
