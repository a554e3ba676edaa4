package rbacsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// Defaults of Config.
const (
	DefaultResyncPeriod = 5 * time.Minute
	// DefaultMinRetry and DefaultMaxRetry bound the backoff after a failed pass.
	DefaultMinRetry = 500 * time.Millisecond
	DefaultMaxRetry = time.Minute
	// passRate caps passes per second, so a tool fighting kaccess over an object cannot turn
	// the watch into a tight loop against the API server.
	passRate  = 5
	passBurst = 5
)

// syncKey is the single workqueue key: every trigger asks for the same full pass, so events
// arriving during a pass coalesce into one more pass.
const syncKey = "sync"

// Config configures a Controller.
type Config struct {
	// Cluster names the cluster Client reaches, for logs and Set's reports; may be empty
	// with one cluster.
	Cluster string
	// Client writes RBAC objects. Its identity needs the rules of the shipped ClusterRole
	// kaccess-gateway (deploy/kubernetes/rbac.yaml).
	Client kubernetes.Interface
	// Policy is the loaded access policy (policy.Load); SetPolicy replaces it.
	Policy *policy.Policy
	// Logger receives one line per applied change and per failed pass; default slog.Default().
	Logger *slog.Logger
	// OnChange, if set, is called after each change the controller applied, for audit events.
	// It runs on the sync goroutine: it must not block for long.
	OnChange func(policy.Change)
	// ResyncPeriod is the safety-net full pass besides the watches; default 5 minutes.
	ResyncPeriod time.Duration
	// MinRetry and MaxRetry bound the exponential backoff after a failed pass.
	MinRetry, MaxRetry time.Duration
	// Now is the clock guardrail exemptions expire by; default time.Now.
	Now func() time.Time
}

// Status says how the controller fares, for /readyz and metrics.
type Status struct {
	// LastSuccess is when a pass last completed; zero before the first.
	LastSuccess time.Time
	// LastError is the error of the last pass, nil if it succeeded.
	LastError error
	// Failures counts failed passes since the last success.
	Failures int
	// Passes counts completed passes.
	Passes int
	// Conflicts names the objects the policy wants but that exist unmanaged under the same
	// name ("RoleBinding team-a/kaccess:devs:edit"); kaccess leaves them alone.
	Conflicts []string
}

// Controller keeps the cluster's managed RBAC and guardrail objects equal to the policy's. Create it with
// New; run it with Run (this replica writes) or RunLeaderElected (one replica writes).
type Controller struct {
	cfg     Config
	log     *slog.Logger
	apply   applier
	limiter *rate.Limiter
	running atomic.Bool

	mu        sync.Mutex
	policy    *policy.Policy
	status    Status
	conflicts map[string]bool                              // warned about once each, until resolved
	queue     workqueue.TypedRateLimitingInterface[string] // set while Run runs
}

// New checks cfg and returns a controller that does nothing until Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil {
		return nil, errors.New("rbacsync: Config.Client is required")
	}
	if cfg.Policy == nil {
		return nil, errors.New("rbacsync: Config.Policy is required (load it with policy.Load)")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("rbacsync: invalid policy: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = DefaultResyncPeriod
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = DefaultMinRetry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(DefaultMaxRetry, cfg.MinRetry)
	}
	log := cfg.Logger.With("component", "rbacsync")
	if cfg.Cluster != "" {
		log = log.With("cluster", cfg.Cluster)
	}
	return &Controller{
		cfg: cfg, log: log, apply: applier{cfg.Client},
		limiter: rate.NewLimiter(passRate, passBurst), policy: cfg.Policy,
	}, nil
}

// SetPolicy replaces the policy (a reloaded file) and, while Run runs, starts a pass.
func (c *Controller) SetPolicy(p *policy.Policy) error {
	if p == nil {
		return errors.New("rbacsync: nil policy")
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("rbacsync: invalid policy: %w", err)
	}
	c.mu.Lock()
	c.policy = p
	q := c.queue
	c.mu.Unlock()
	if q != nil {
		q.Add(syncKey)
	}
	return nil
}

// Cluster is Config.Cluster.
func (c *Controller) Cluster() string { return c.cfg.Cluster }

// Status returns how the last passes went.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Run writes: it watches the managed objects and namespaces and runs a pass at start, on
// every relevant event, every ResyncPeriod and, after a failure, with backoff. It returns nil
// when ctx ends. Only one Run (or RunLeaderElected) may run at a time per Controller; with
// several gateway replicas, use RunLeaderElected.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("rbacsync: Run is already running")
	}
	defer c.running.Store(false)

	q := workqueue.NewTypedRateLimitingQueue(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](c.cfg.MinRetry, c.cfg.MaxRetry))
	c.mu.Lock()
	c.queue = q
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.queue = nil
		c.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatches := c.watch(ctx, q)
	defer stopWatches()
	go func() {
		<-ctx.Done()
		q.ShutDown() // wakes the worker's Get
	}()
	go func() {
		t := time.NewTicker(c.cfg.ResyncPeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				q.Add(syncKey)
			}
		}
	}()
	q.Add(syncKey)
	c.log.Info("rbac sync started", "resync_period", c.cfg.ResyncPeriod.String())
	for c.processNext(ctx, q) {
	}
	c.log.Info("rbac sync stopped")
	return nil
}

func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	if err := c.limiter.Wait(ctx); err != nil {
		return false // ctx ended
	}
	if _, err := c.Sync(ctx); err != nil {
		if ctx.Err() != nil {
			return false
		}
		q.AddRateLimited(key)
		c.log.Error("rbac sync failed; retrying with backoff", "error", err, "failures", q.NumRequeues(key))
		return true
	}
	q.Forget(key)
	c.mu.Lock()
	p := c.policy
	c.mu.Unlock()
	// An exemption stops applying when it expires, not at the next resync: a pass then drops it.
	now := c.cfg.Now()
	if next := p.NextExpiry(now); !next.IsZero() {
		q.AddAfter(key, next.Sub(now)+expiryGrace)
	}
	return true
}

// expiryGrace runs the pass at an expiry just after it, so the exemption is judged expired.
const expiryGrace = 100 * time.Millisecond

// Sync runs one pass now: read the cluster, plan, apply. It returns the changes it applied.
// When reading fails nothing is written, deletes included: an unreachable or half-readable
// API server must never look like an empty cluster. A change that fails does not stop the
// others; the pass then returns every error and the caller retries.
//
// Run calls it; call it directly for a one-shot apply. It may overlap with Run's passes, which
// is harmless (updates carry the resourceVersion they read, deletes preconditions) but
// pointless: with several replicas, only the leader should write.
func (c *Controller) Sync(ctx context.Context) (policy.Changes, error) {
	c.mu.Lock()
	p := c.policy
	c.mu.Unlock()
	applied, err := c.sync(ctx, p)
	c.mu.Lock()
	c.status.Passes++
	if len(c.conflicts) > 0 {
		c.status.Conflicts = slices.Sorted(maps.Keys(c.conflicts))
	} else {
		c.status.Conflicts = nil
	}
	c.status.LastError = err
	if err != nil {
		c.status.Failures++
	} else {
		c.status.Failures, c.status.LastSuccess = 0, time.Now()
	}
	c.mu.Unlock()
	return applied, err
}

func (c *Controller) sync(ctx context.Context, p *policy.Policy) (policy.Changes, error) {
	state, err := ReadState(ctx, c.cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("read cluster, nothing applied: %w", err)
	}
	state.Now = c.cfg.Now()
	plan, err := PlanFor(p, state)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	var applied policy.Changes
	var errs []error
	conflicts := map[string]bool{}
	for _, ch := range plan {
		attrs := []any{"action", string(ch.Action), "kind", ch.Kind, "namespace", ch.Namespace, "name", ch.Name}
		if err := c.apply.apply(ctx, ch); err != nil {
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				// Deleted since the read: it takes no new objects, and once gone leaves the plan.
				c.log.Debug("rbac object not applied: namespace terminating", attrs...)
				continue
			}
			if errors.Is(err, errConflict) {
				// Not retried (it would not help), and warned about once until resolved: every
				// pass meets it again.
				id := ch.Kind + " " + displayName(ch)
				conflicts[id] = true
				c.mu.Lock()
				known := c.conflicts[id]
				c.mu.Unlock()
				if !known {
					c.log.Warn("rbac object not applied", append(attrs, "error", err)...)
				}
				continue
			}
			errs = append(errs, fmt.Errorf("%s %s %s: %w", ch.Action, ch.Kind, displayName(ch), err))
			continue
		}
		c.log.Info("rbac object changed", append(attrs, "details", strings.Join(ch.Details, "; "))...)
		applied = append(applied, ch)
		if c.cfg.OnChange != nil {
			c.cfg.OnChange(ch)
		}
	}
	c.mu.Lock()
	if len(errs) > 0 { // a failed pass may not have reached every conflict: forget none
		maps.Copy(conflicts, c.conflicts)
	}
	c.conflicts = conflicts
	c.mu.Unlock()
	return applied, errors.Join(errs...)
}

func displayName(ch policy.Change) string {
	if ch.Namespace == "" {
		return ch.Name
	}
	return ch.Namespace + "/" + ch.Name
}
