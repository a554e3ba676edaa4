package rbacsync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of LeaderConfig, those of Kubernetes' own controllers.
const (
	DefaultLeaseName     = "kaccess-rbacsync"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaderConfig says which Lease the gateway replicas compete for.
type LeaderConfig struct {
	// Client reads and writes the Lease; default the controller's Client.
	Client kubernetes.Interface
	// Namespace is the gateway's own namespace, where the Lease lives (required). The shipped
	// RBAC allows leases in kaccess-system only.
	Namespace string
	// Name of the Lease; default kaccess-rbacsync, the only name the shipped RBAC lets the
	// gateway update.
	Name string
	// Identity is this replica's, unique among replicas; required (DefaultIdentity is one).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod as in client-go's leaderelection: a
	// follower takes over at most LeaseDuration after the leader stopped renewing, at once
	// when it stopped cleanly (the Lease is released).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// OnNewLeader, if set, is called with the identity of each leader observed.
	OnNewLeader func(identity string)
	// AlsoRun, if set, runs beside the sync loop while this replica leads (the access grant
	// controller), under the same Lease; its context ends when leadership does, and the Lease
	// is released only after it returned.
	AlsoRun func(ctx context.Context) error
}

// DefaultIdentity returns an identity for LeaderConfig: the host name (a pod's name in
// Kubernetes) and a random suffix, so two processes on one host never share it.
func DefaultIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "kaccess"
	}
	return host + "_" + rand.Text()[:8]
}

// RunLeaderElected runs the controller on this replica only while it holds the Lease, and
// competes again whenever it loses it, until ctx ends. On ctx's end it stops writing first
// and then releases the Lease, so another replica takes over at once and never overlaps.
func (c *Controller) RunLeaderElected(ctx context.Context, lc LeaderConfig) error {
	if lc.Client == nil {
		lc.Client = c.cfg.Client
	}
	if lc.Name == "" {
		lc.Name = DefaultLeaseName
	}
	also := lc.AlsoRun
	lc.AlsoRun = nil
	return RunElected(ctx, lc, c.log, func(runCtx context.Context) error {
		var wg sync.WaitGroup
		if also != nil {
			wg.Go(func() {
				if err := also(runCtx); err != nil && runCtx.Err() == nil {
					c.log.Error("controller run beside rbac sync stopped", "error", err)
				}
			})
		}
		err := c.Run(runCtx)
		wg.Wait()
		return err
	})
}

// RunElected runs run on this replica only while it holds lc's Lease (lc.Client is required;
// AlsoRun runs beside run), competing again whenever it loses it, until ctx ends. run's
// context ends when leadership does; the Lease is released only after run returned, so a
// successor never overlaps. Other leader-elected loops (scheduled detections) use it with a
// Lease of their own.
func RunElected(ctx context.Context, lc LeaderConfig, log *slog.Logger, run func(ctx context.Context) error) error {
	if lc.Client == nil {
		return errors.New("leader election: LeaderConfig.Client is required")
	}
	if lc.Namespace == "" {
		return errors.New("leader election: LeaderConfig.Namespace is required (the gateway's own namespace)")
	}
	if lc.Identity == "" {
		return errors.New("leader election: LeaderConfig.Identity is required (unique per replica, e.g. the pod name)")
	}
	if lc.Name == "" {
		lc.Name = DefaultLeaseName
	}
	if lc.LeaseDuration <= 0 {
		lc.LeaseDuration = DefaultLeaseDuration
	}
	if lc.RenewDeadline <= 0 {
		lc.RenewDeadline = DefaultRenewDeadline
	}
	if lc.RetryPeriod <= 0 {
		lc.RetryPeriod = DefaultRetryPeriod
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: lc.Namespace, Name: lc.Name},
		Client:     lc.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: lc.Identity},
	}
	e := &elector{lc: lc, log: log, run: run}
	// Validate once up front: NewLeaderElector checks the durations against each other.
	if _, err := leaderelection.NewLeaderElector(e.config(lock, nil)); err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	for ctx.Err() == nil {
		e.leadOnce(ctx, lock)
	}
	return nil
}

type elector struct {
	lc  LeaderConfig
	log *slog.Logger
	run func(ctx context.Context) error
}

// leadOnce competes for the Lease and, once leading, runs until the Lease is lost or ctx ends.
func (e *elector) leadOnce(ctx context.Context, lock resourcelock.Interface) {
	lc := e.lc
	// The elector gets a context that ends only after the run has stopped: it releases
	// the Lease when its context ends, and a release while a write is in flight could let
	// another replica start writing alongside.
	electorCtx, stopElector := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElector()

	var mu sync.Mutex
	var finished chan struct{} // closed when the run of this term has stopped
	stopOnCancel := context.AfterFunc(ctx, func() {
		mu.Lock()
		f := finished
		mu.Unlock()
		if f != nil {
			<-f
		}
		stopElector()
	})
	defer stopOnCancel()

	lead := func(leaderCtx context.Context) {
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			return
		}
		f := make(chan struct{})
		finished = f
		mu.Unlock()
		defer close(f)
		runCtx, cancel := context.WithCancel(leaderCtx)
		defer cancel()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		e.log.Info("leading", "lease", lc.Namespace+"/"+lc.Name, "identity", lc.Identity)
		if err := e.run(runCtx); err != nil && runCtx.Err() == nil {
			e.log.Error("cannot run while leading", "lease", lc.Namespace+"/"+lc.Name, "error", err)
		}
		cancel()
	}
	le, err := leaderelection.NewLeaderElector(e.config(lock, lead))
	if err != nil { // validated in RunElected
		e.log.Error("leader election failed", "lease", lc.Namespace+"/"+lc.Name, "error", err)
		return
	}
	le.Run(electorCtx)

	// Lost the Lease (or ctx ended): wait until this term's writes have stopped before
	// competing again.
	mu.Lock()
	f := finished
	mu.Unlock()
	if f != nil {
		<-f
	}
}

func (e *elector) config(lock resourcelock.Interface, lead func(context.Context)) leaderelection.LeaderElectionConfig {
	lc := e.lc
	if lead == nil {
		lead = func(context.Context) {}
	}
	return leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            lc.Name,
		LeaseDuration:   lc.LeaseDuration,
		RenewDeadline:   lc.RenewDeadline,
		RetryPeriod:     lc.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: lead,
			OnStoppedLeading: func() {
				e.log.Info("not leading", "lease", lc.Namespace+"/"+lc.Name, "identity", lc.Identity)
			},
			OnNewLeader: func(identity string) {
				if lc.OnNewLeader != nil {
					lc.OnNewLeader(identity)
				}
			},
		},
	}
}
