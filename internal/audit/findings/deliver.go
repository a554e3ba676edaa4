package findings

import (
	"context"
	"time"
)

// NotificationKind says why a finding is delivered.
type NotificationKind string

// Notification kinds.
const (
	NotifyNew     NotificationKind = "new"     // first delivery of a firing finding
	NotifyRepeat  NotificationKind = "repeat"  // re-sent while firing, so the receiver keeps it active
	NotifyResolve NotificationKind = "resolve" // it ended: resolved, acknowledged or silenced
)

// Notification is one finding to deliver and why.
type Notification struct {
	Kind    NotificationKind
	Finding *Finding
	// EndsAt is when the receiver should consider the alert ended if it hears nothing more:
	// a few resend intervals ahead while firing, the end itself on NotifyResolve.
	EndsAt time.Time
}

// Deliverer sends notifications to every configured receiver. An error means some receiver
// did not take them: all are sent again later (receivers must tolerate repeats; Alertmanager
// deduplicates by labels).
type Deliverer interface {
	Deliver(ctx context.Context, ns []Notification) error
}

// deliverLoop sends what the store says is owed, with exponential backoff while receivers
// fail. Findings are stored before they are delivered, so what fails here is sent by this
// loop later, or by the next leader.
func (s *Scheduler) deliverLoop(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		wait := s.cfg.DeliveryTick
		if err := s.deliverOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, s.cfg.DeliveryTick), s.cfg.MaxBackoff)
			wait = backoff
			s.cfg.Logger.Warn("alert delivery failed; retrying", "retry_in", backoff.String(), "error", err.Error())
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// DeliverOnce sends what is owed now (tests call it; Run calls it every DeliveryTick).
func (s *Scheduler) DeliverOnce(ctx context.Context) error { return s.deliverOnce(ctx) }

func (s *Scheduler) deliverOnce(ctx context.Context) error {
	if s.cfg.Deliverer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	owed, err := s.cfg.Store.Owed(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	var ns []Notification
	for _, f := range owed {
		switch {
		case f.State == Firing && !f.NotifiedFiring:
			ns = append(ns, Notification{Kind: NotifyNew, Finding: f, EndsAt: now.Add(4 * s.cfg.ResendInterval)})
		case f.State == Firing:
			if last, ok := s.lastSent[f.Fingerprint]; ok && now.Sub(last) < s.cfg.ResendInterval {
				continue
			}
			ns = append(ns, Notification{Kind: NotifyRepeat, Finding: f, EndsAt: now.Add(4 * s.cfg.ResendInterval)})
		case !f.NotifiedFiring:
			// It fired and ended before any receiver took it: the alert goes out first, and
			// its end a resend interval later (below), so Alertmanager notifies both.
			ns = append(ns, Notification{Kind: NotifyNew, Finding: f, EndsAt: now.Add(4 * s.cfg.ResendInterval)})
		default: // ended after its alert went out
			// Not sooner than a resend interval after the alert: an end that reaches
			// Alertmanager before it flushed the group would turn the alert into nothing.
			if last, ok := s.lastSent[f.Fingerprint]; ok && now.Sub(last) < s.cfg.ResendInterval {
				continue
			}
			end := f.UpdatedAt
			if !f.ResolvedAt.IsZero() {
				end = f.ResolvedAt
			}
			ns = append(ns, Notification{Kind: NotifyResolve, Finding: f, EndsAt: end})
		}
	}
	if len(ns) == 0 {
		return nil
	}
	if err := s.cfg.Deliverer.Deliver(ctx, ns); err != nil {
		return err
	}
	// The flags are set on a fresh read of each finding: an auditor may have acknowledged it
	// on another replica while the alert was on its way, and that state must stand.
	var writes []*Finding
	for _, n := range ns {
		f := n.Finding
		s.lastSent[f.Fingerprint] = now
		if n.Kind == NotifyRepeat {
			continue
		}
		fresh, err := s.cfg.Store.Get(ctx, f.Fingerprint)
		if err != nil {
			return err
		}
		g := *fresh
		if n.Kind == NotifyNew {
			g.NotifiedFiring = true
		} else {
			g.NotifiedResolved = true
			delete(s.lastSent, f.Fingerprint)
		}
		g.Version = nextVersion(fresh.Version, now)
		writes = append(writes, &g)
	}
	return s.cfg.Store.Put(ctx, writes...)
}
