package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kaccess/kaccess/internal/audit/capture"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/audit/spool"
)

// StoreOpener connects to the audit store. The shipper calls it until it succeeds.
type StoreOpener func(ctx context.Context) (ship.Sink, error)

// WithAuditStore replaces the configured audit store (tests, embedding).
func WithAuditStore(open StoreOpener) Option {
	return func(o *options) { o.auditStore = open }
}

// audit is the pipeline every request's record takes: capture -> spool -> shipper -> store,
// and the store's handle for searches.
type audit struct {
	spool   *spool.Spool
	capture *capture.Capture
	shipper *ship.Shipper
	store   *sharedStore
}

// setupAudit opens the spool (recovering a torn tail from a crash) and prepares capture and
// the shipper. The store is only checked here (a missing embedded engine is a configuration
// error); connecting to it happens in the background, so the gateway serves and spools while
// a ClickHouse server is down.
func (g *Gateway) setupAudit(open StoreOpener, trusted []netip.Prefix) error {
	ac := g.cfg.Audit
	if open == nil {
		var err error
		if open, err = g.configuredStore(); err != nil {
			return err
		}
	}
	pol := event.DefaultPolicy()
	if ac.PolicyFile != "" {
		var err error
		if pol, err = event.LoadPolicyFile(ac.PolicyFile); err != nil {
			return fmt.Errorf("audit.policyFile: %w", err)
		}
	}
	sp, err := spool.Open(spool.Config{
		Dir: ac.Spool.Dir, MaxBytes: ac.Spool.MaxBytes, SyncInterval: ac.Spool.SyncInterval.D(), Logger: g.log,
	})
	if err != nil {
		return fmt.Errorf("audit spool %s: %w", ac.Spool.Dir, err)
	}
	if torn := sp.Recovered(); torn != nil {
		g.log.Warn("audit spool: a torn record at the end of the spool (crash while writing) was cut off; every complete record before it is kept",
			"detail", fmt.Sprintf("%+v", *torn))
	}
	cp, err := capture.New(capture.Config{
		Log: sp, Policy: pol, Redactor: &event.Redactor{MaxBodyBytes: ac.MaxBodyBytes},
		Strict: ac.Strict, OnFull: capture.OnFull(ac.OnFull), TrustedProxies: trusted, Logger: g.log,
	})
	if err != nil {
		sp.Close()
		return err
	}
	store := newSharedStore(open)
	sh, err := ship.New(ship.Config{
		Source: sp.Reader(), Open: store.Open, Instance: sp.ID(), MaxBatch: ac.Batch.MaxEvents,
		FlushInterval: ac.Batch.FlushInterval.D(), Logger: g.log,
	})
	if err != nil {
		sp.Close()
		return err
	}
	g.audit = &audit{spool: sp, capture: cp, shipper: sh, store: store}
	g.registerAuditMetrics()
	return nil
}

// runShipper ships until ctx ends; a spool error it cannot get past is logged, and the
// spool keeps the records for the next start.
func (g *Gateway) runShipper(ctx context.Context) {
	err := g.audit.shipper.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		g.log.Error("audit shipper stopped; records stay in the spool", "error", err.Error())
	}
}

// closeAudit fsyncs and closes the spool; call it once the shipper stopped.
func (g *Gateway) closeAudit() {
	if err := g.audit.spool.Close(); err != nil {
		g.log.Error("closing the audit spool", "error", err.Error())
	}
}

// auditFull reports whether the spool is too full to take requests (for /readyz).
func (g *Gateway) auditFull() bool {
	return g.cfg.Audit.OnFull == string(capture.OnFullDeny) && g.audit.capture.Full()
}

func (g *Gateway) registerAuditMetrics() {
	c, sp, sh := g.audit.capture, g.audit.spool, g.audit.shipper
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	g.metrics.registry.MustRegister(
		counter("kaccess_audit_records_total", "Audit records appended to the spool.",
			func() float64 { return float64(c.Stats().Recorded) }),
		counter("kaccess_audit_refused_total", "Requests refused with 503 because the audit spool was full (onFull: deny).",
			func() float64 { return float64(c.Stats().Refused) }),
		counter("kaccess_audit_dropped_total", "Requests or changes NOT recorded because the spool was full (onFull: drop). Alert on any increase.",
			func() float64 { return float64(c.Stats().Dropped) }),
		counter("kaccess_audit_failed_total", "Records that could not be appended; their responses were withheld.",
			func() float64 { return float64(c.Stats().Failed) }),
		counter("kaccess_audit_shipped_total", "Audit events the store confirmed.",
			func() float64 { return float64(sh.Stats().Shipped) }),
		counter("kaccess_audit_ship_retries_total", "Failed inserts into the audit store (retried with the same batch).",
			func() float64 { return float64(sh.Stats().Retries) }),
		counter("kaccess_audit_undecodable_total", "Spool records that did not decode and were skipped.",
			func() float64 { return float64(sh.Stats().Undecodable) }),
		counter("kaccess_audit_spool_errors_total", "Failed reads or acknowledgements of the audit spool by the shipper (a full or failing disk); each is retried, and records wait in the spool meanwhile.",
			func() float64 { return float64(sh.Stats().SpoolErrors) }),
		gauge("kaccess_audit_spool_bytes", "Bytes of the audit spool on disk.",
			func() float64 { return float64(sp.Stats().BytesOnDisk) }),
		gauge("kaccess_audit_spool_free_bytes", "Bytes the audit spool can still take before onFull applies.",
			func() float64 { return float64(sp.Free()) }),
		gauge("kaccess_audit_spool_pending_records", "Records in the spool the store has not confirmed yet.",
			func() float64 { return float64(sp.Stats().RecordsPending) }),
		gauge("kaccess_audit_spool_torn_tail_bytes", "Bytes of a torn last record cut off when the spool was opened (a crash while writing it).",
			func() float64 { return float64(sp.Stats().TornBytesDropped) }),
		gauge("kaccess_audit_store_up", "1 while the audit store takes inserts (opened, and the last insert succeeded); 0 while it cannot be reached or fails, and records wait in the spool.",
			func() float64 {
				if sh.Stats().StoreUp {
					return 1
				}
				return 0
			}),
		gauge("kaccess_audit_ship_last_success_timestamp_seconds", "Unix time the audit store last confirmed a batch from the spool (or the shipper started). With records pending, time() minus this is the shipper's lag.",
			func() float64 { return float64(sh.Stats().LastSuccess.UnixNano()) / 1e9 }),
		gauge("kaccess_audit_store_connected", "1 once the audit store was reached.",
			func() float64 {
				if sh.Stats().Connected {
					return 1
				}
				return 0
			}),
	)
}
