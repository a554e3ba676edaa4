package findings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
)

// Rule is one scheduled detection.
type Rule struct {
	Detection detect.Detection
	Interval  time.Duration // how often it runs
	Window    time.Duration // how far back each run looks; also the fingerprint's bucket
	Severity  string        // overrides the detection's (and the row's) severity when set
}

// Recorder puts state changes on the audit record (the gateway's capture).
type Recorder interface {
	Record(e *event.Event) error
}

// Config configures a Scheduler.
type Config struct {
	Store        *Store
	Querier      detect.Querier
	Rules        []Rule
	Suppressions []Suppression
	Recorder     Recorder
	// Deliverer sends alerts; nil stores findings without delivering them.
	Deliverer Deliverer
	// ResendInterval is how often a firing alert is sent again (below Alertmanager's
	// resolve_timeout, so it does not time out); default one minute.
	ResendInterval time.Duration
	// DeliveryTick is how often owed deliveries are looked at; default one second.
	DeliveryTick time.Duration
	// MaxBackoff bounds the wait between failed deliveries; default one minute.
	MaxBackoff time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
}

// Scheduler runs rules and delivers what they find. Run it on the leader only; Acknowledge
// may be called on any replica.
type Scheduler struct {
	cfg Config
	// mu serializes read-modify-write of findings within this process (runs, deliveries,
	// acknowledgements), so a version written here is never based on a stale read of another
	// writer here.
	mu       sync.Mutex
	lastSent map[string]time.Time // fingerprint -> last delivery (resends of firing alerts)
}

// New returns a Scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Store == nil || cfg.Querier == nil || cfg.Recorder == nil {
		return nil, errors.New("findings: Store, Querier and Recorder are required")
	}
	for _, r := range cfg.Rules {
		if r.Interval <= 0 || r.Window < time.Second {
			return nil, fmt.Errorf("findings: rule %s: interval must be positive and window at least 1s", r.Detection.Name)
		}
	}
	if cfg.ResendInterval <= 0 {
		cfg.ResendInterval = time.Minute
	}
	if cfg.DeliveryTick <= 0 {
		cfg.DeliveryTick = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{cfg: cfg, lastSent: map[string]time.Time{}}, nil
}

// Run runs every rule on its interval (the first run at once) and delivers owed alerts,
// until ctx ends. A new leader starts here: what the store says is firing is re-sent.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	clear(s.lastSent) // a new term re-sends everything firing at once
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range s.cfg.Rules {
		wg.Go(func() {
			t := time.NewTicker(r.Interval)
			defer t.Stop()
			for {
				if err := s.RunRule(ctx, r); err != nil && ctx.Err() == nil {
					s.cfg.Logger.Error("scheduled detection failed", "detection", r.Detection.Name, "error", err.Error())
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	if s.cfg.Deliverer != nil {
		wg.Go(func() { s.deliverLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// RunRule runs one rule over the window ending now and brings the stored findings in line
// with what it found: new ones fire (or are silenced), seen ones are updated, open ones it no
// longer sees are resolved. A failed run changes nothing.
func (s *Scheduler) RunRule(ctx context.Context, r Rule) error {
	// A store that stops answering must not wedge the schedule: the run is abandoned (the
	// embedded store then restarts its engine) and the next one tries again.
	ctx, cancel := context.WithTimeout(ctx, max(r.Interval, opTimeout))
	defer cancel()
	now := s.cfg.Now().UTC()
	found, err := detect.RunDetection(ctx, s.cfg.Querier, r.Detection, now.Add(-r.Window), now)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	open, err := s.cfg.Store.Open(ctx, r.Detection.Name)
	if err != nil {
		return err
	}
	byKey := map[string]*Finding{}
	for _, f := range open {
		byKey[f.key()] = f
	}
	seen := map[string]bool{}
	var writes []*Finding
	var errs []error
	for _, d := range found {
		cand := s.fromDetection(r, d, now)
		k := cand.key()
		if seen[k] {
			continue // a detection may return one key twice; the first (earliest) stands
		}
		seen[k] = true
		if cur, ok := byKey[k]; ok {
			if w := s.update(cur, cand, now); w != nil {
				writes = append(writes, w)
			}
			continue
		}
		prev, err := s.cfg.Store.Get(ctx, cand.Fingerprint)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			continue
		case prev.State.Open():
			continue // open under another key: cannot happen, the key is part of the fingerprint
		default:
			// Resolved, and seen again in the same bucket: it fires again, as a new alert.
			cand.CreatedAt, cand.Version = prev.CreatedAt, prev.Version
		}
		if sup, ok := s.suppressedBy(cand, now); ok {
			cand.State, cand.Reason, cand.Actor = Silenced, sup.Reason, sup.describe()
		}
		cand.Version = nextVersion(cand.Version, now)
		if err := s.record(cand, "", ""); err != nil {
			errs = append(errs, err)
			continue
		}
		writes = append(writes, cand)
	}
	// Open findings the run no longer sees are resolved, unless the run was cut at the
	// detection's limit: then absence says nothing.
	if len(found) < 1000 {
		for _, f := range open {
			if seen[f.key()] {
				continue
			}
			g := *f
			prevState := g.State
			g.State, g.ResolvedAt, g.UpdatedAt = Resolved, now, now
			if prevState == Silenced && !g.NotifiedFiring {
				g.NotifiedResolved = true // never alerted: there is no alert to end
			}
			g.Version = nextVersion(f.Version, now)
			if err := s.record(&g, string(prevState), ""); err != nil {
				errs = append(errs, err)
				continue
			}
			writes = append(writes, &g)
		}
	}
	if err := s.cfg.Store.Put(ctx, writes...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// opTimeout bounds one run's or one delivery's work on the store, at least.
const opTimeout = 30 * time.Second

// fromDetection is a new firing finding from a detection's result.
func (s *Scheduler) fromDetection(r Rule, d detect.Finding, now time.Time) *Finding {
	f := &Finding{
		Detection: d.Detection, Cluster: d.Cluster, Subject: d.Subject, Scope: d.Scope,
		Severity: string(d.Severity), Summary: d.Summary, State: Firing,
		FirstSeen: d.FirstSeen, LastSeen: d.LastSeen, Count: d.Count, EventIDs: d.EventIDs,
		Window: r.Window, CreatedAt: now, UpdatedAt: now,
	}
	if r.Severity != "" {
		f.Severity = r.Severity
	}
	if t := r.Detection.Technique; t != nil {
		f.TechniqueID, f.TechniqueName = t.ID, t.Name
	}
	f.Fingerprint = Fingerprint(f.Detection, f.Cluster, f.Subject, f.Scope, f.FirstSeen, r.Window)
	return f
}

// update folds what a run saw into an open finding; nil when nothing changed. Severity stays
// as it was first stored: it is an alert label, and a changed label would be another alert.
func (s *Scheduler) update(cur, seen *Finding, now time.Time) *Finding {
	g := *cur
	changed := false
	if seen.LastSeen.After(g.LastSeen) {
		g.LastSeen, changed = seen.LastSeen, true
	}
	if seen.FirstSeen.Before(g.FirstSeen) {
		g.FirstSeen, changed = seen.FirstSeen, true
	}
	if seen.Count > g.Count {
		g.Count, changed = seen.Count, true
	}
	if ids := mergeIDs(g.EventIDs, seen.EventIDs, max(len(g.EventIDs), len(seen.EventIDs))); !slices.Equal(ids, g.EventIDs) {
		g.EventIDs, changed = ids, true
	}
	if changed {
		g.Summary = seen.Summary
	}
	// A suppression added since (the gateway restarted with it) silences a firing finding.
	if g.State == Firing {
		if sup, ok := s.suppressedBy(&g, now); ok {
			g.State, g.Reason, g.Actor = Silenced, sup.Reason, sup.describe()
			if err := s.record(&g, string(Firing), ""); err != nil {
				s.cfg.Logger.Error("finding not silenced: its audit event was not recorded", "finding", g.Fingerprint, "error", err.Error())
				g.State, g.Reason, g.Actor = Firing, cur.Reason, cur.Actor
			} else {
				changed = true
			}
		}
	}
	if !changed {
		return nil
	}
	g.UpdatedAt = now
	g.Version = nextVersion(cur.Version, now)
	return &g
}

// mergeIDs keeps the evidence already held first, then new ids, up to n.
func mergeIDs(have, more []string, n int) []string {
	out := slices.Clone(have)
	for _, id := range more {
		if len(out) >= n {
			break
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func (s *Scheduler) suppressedBy(f *Finding, now time.Time) (Suppression, bool) {
	for _, sup := range s.cfg.Suppressions {
		if sup.matches(f, now) {
			return sup, true
		}
	}
	return Suppression{}, false
}

// nextVersion is above prev and, normally, the time in nanoseconds: versions rise across
// replicas as far as their clocks agree, and always within one.
func nextVersion(prev uint64, now time.Time) uint64 {
	return max(prev+1, uint64(now.UnixNano()))
}

// Acknowledge marks an open finding acknowledged by actor, with a reason. Its alert ends.
func (s *Scheduler) Acknowledge(ctx context.Context, fingerprint, actor, reason string, audit func(*event.Event)) (*Finding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.cfg.Store.Get(ctx, fingerprint)
	if err != nil {
		return nil, err
	}
	if f.State != Firing {
		return nil, fmt.Errorf("%w: finding %s is %s; only a firing finding can be acknowledged", ErrInvalid, fingerprint, f.State)
	}
	now := s.cfg.Now().UTC()
	g := *f
	g.State, g.Reason, g.Actor, g.UpdatedAt = Acknowledged, reason, actor, now
	g.Version = nextVersion(f.Version, now)
	e := stateEvent(&g, string(Firing), now)
	if audit != nil {
		audit(e)
	}
	if err := s.cfg.Recorder.Record(e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRecorded, err)
	}
	if err := s.cfg.Store.Put(ctx, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// ErrNotRecorded is a state change refused because its audit event could not be recorded.
var ErrNotRecorded = errors.New("the change could not be put on the audit record, so it was not made")

// record puts a finding's change of state on the audit record. A change that cannot be
// recorded is not made (the next run tries again).
func (s *Scheduler) record(f *Finding, prevState, _ string) error {
	if err := s.cfg.Recorder.Record(stateEvent(f, prevState, f.UpdatedAt)); err != nil {
		return fmt.Errorf("finding %s %s: %w: %w", f.Fingerprint, f.State, ErrNotRecorded, err)
	}
	return nil
}

// stateEvent is the audit event of a finding's change to its current state.
func stateEvent(f *Finding, prevState string, now time.Time) *event.Event {
	e := event.New(event.KindFinding, now)
	e.Source = "kaccess"
	e.Cluster = f.Cluster
	e.Verb = string(f.State)
	e.APIGroup, e.APIVersion, e.Resource, e.Name = "kaccess.io", "v1", "findings", f.Fingerprint
	if f.State == Acknowledged {
		e.User = f.Actor
	}
	e.SetStateOutcome(200, "")
	ids := f.EventIDs
	if len(ids) > 10 {
		ids = ids[:10]
	}
	e.Extra = map[string]string{
		"detection": f.Detection, "subject": f.Subject, "severity": f.Severity, "state": string(f.State),
		"summary": f.Summary, "evidence": strings.Join(ids, ","),
		"first_seen": f.FirstSeen.UTC().Format(time.RFC3339Nano), "last_seen": f.LastSeen.UTC().Format(time.RFC3339Nano),
	}
	if f.Scope != "" {
		e.Extra["scope"] = f.Scope
	}
	if prevState != "" {
		e.Extra["previous_state"] = prevState
	}
	if f.State == Acknowledged || f.State == Silenced {
		e.Extra["reason"] = f.Reason
		e.Extra["by"] = f.Actor
	}
	return e
}
