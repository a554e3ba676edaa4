package rbacsync

import (
	"context"
	"errors"
	"sync"
)

// Set syncs several clusters: one Controller per cluster, each with its own client and the
// policy as that cluster sees it (policy.ForCluster), run side by side by one leader. Each
// controller reads its cluster in full before it writes, so a cluster that is down or cannot
// be listed fully fails only its own passes (retried with backoff, reported by its Status)
// and is never pruned; the other clusters are synced as usual.
type Set struct {
	controllers []*Controller
}

// NewSet groups controllers; each must name its cluster (Config.Cluster), uniquely.
func NewSet(controllers ...*Controller) (*Set, error) {
	if len(controllers) == 0 {
		return nil, errors.New("rbacsync: a Set needs at least one controller")
	}
	seen := map[string]bool{}
	for _, c := range controllers {
		name := c.Cluster()
		if name == "" && len(controllers) > 1 {
			return nil, errors.New("rbacsync: every controller of a Set of several needs Config.Cluster")
		}
		if seen[name] {
			return nil, errors.New("rbacsync: two controllers of a Set sync cluster " + name)
		}
		seen[name] = true
	}
	return &Set{controllers: controllers}, nil
}

// Controllers returns the controllers, in the order given.
func (s *Set) Controllers() []*Controller { return s.controllers }

// Run runs every controller until ctx ends.
func (s *Set) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.controllers))
	for i, c := range s.controllers {
		wg.Go(func() { errs[i] = c.Run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RunLeaderElected runs every controller while this replica holds lc's Lease (one Lease
// for all clusters: lc.Client, by default the first controller's client, holds it), with
// lc.AlsoRun beside them, as Controller.RunLeaderElected does for one.
func (s *Set) RunLeaderElected(ctx context.Context, lc LeaderConfig) error {
	if lc.Client == nil {
		lc.Client = s.controllers[0].cfg.Client
	}
	also := lc.AlsoRun
	lc.AlsoRun = nil
	log := s.controllers[0].cfg.Logger.With("component", "rbacsync")
	return RunElected(ctx, lc, log, func(runCtx context.Context) error {
		var wg sync.WaitGroup
		if also != nil {
			wg.Go(func() {
				if err := also(runCtx); err != nil && runCtx.Err() == nil {
					log.Error("controller run beside rbac sync stopped", "error", err)
				}
			})
		}
		err := s.Run(runCtx)
		wg.Wait()
		return err
	})
}

// ClusterStatus is how one cluster's sync fares.
type ClusterStatus struct {
	Cluster string
	Status
}

// Status returns every controller's status, in order.
func (s *Set) Status() []ClusterStatus {
	out := make([]ClusterStatus, len(s.controllers))
	for i, c := range s.controllers {
		out[i] = ClusterStatus{Cluster: c.Cluster(), Status: c.Status()}
	}
	return out
}
