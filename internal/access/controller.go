package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// Defaults of ControllerConfig.
const (
	DefaultSweepPeriod = time.Minute
	minRetry           = 500 * time.Millisecond
	maxRetry           = time.Minute
)

// ControllerConfig configures the grant controller.
type ControllerConfig struct {
	// Kube writes the grant bindings (the gateway's ClusterRole kaccess-gateway allows it),
	// with one cluster. With several, set Clusters instead.
	Kube kubernetes.Interface
	// Clusters write the grant bindings on each cluster behind the gateway: a request's go to
	// the clusters it covers (Spec.Clusters; none listed: the Default one).
	Clusters []ClusterClient
	// Client reads and writes AccessRequests in Namespace.
	Client dynamic.Interface
	// Namespace holds the requests; default kaccess-system.
	Namespace string
	// Recorder gets the expiry events. Expiry happens even if recording fails.
	Recorder Recorder
	// Clock; default the real clock. Requeues at expiry times run on it.
	Clock clock.WithTicker
	// SweepPeriod is how often every grant binding is checked against its request; default
	// one minute. A sweep also runs at start.
	SweepPeriod time.Duration
	// PendingTTL must match the Service's; default 24h.
	PendingTTL time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// ClusterClient is one cluster the grant controller writes bindings on.
type ClusterClient struct {
	Name    string
	Default bool
	Kube    kubernetes.Interface
}

// clusterBindings are one cluster's grant bindings.
type clusterBindings struct {
	name      string
	isDefault bool
	bindings
}

// Controller binds each approved request's role to its grant group, deletes the bindings when
// the grant ends (requeued exactly at expiresAt), marks due requests expired and sweeps away
// bindings whose request is gone or over. Only one replica may run it: the lead elects one.
type Controller struct {
	cfg      ControllerConfig
	log      *slog.Logger
	store    store
	clusters []clusterBindings
	running  atomic.Bool
	informer cache.SharedIndexInformer
}

// NewController checks cfg and returns a controller that does nothing until Run.
func NewController(cfg ControllerConfig) (*Controller, error) {
	var errs []error
	if cfg.Kube == nil && len(cfg.Clusters) == 0 {
		errs = append(errs, errors.New("access: ControllerConfig.Kube or Clusters is required"))
	}
	for i, c := range cfg.Clusters {
		if c.Kube == nil {
			errs = append(errs, fmt.Errorf("access: ControllerConfig.Clusters[%d].Kube is required", i))
		}
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("access: ControllerConfig.Client is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Recorder == nil {
		cfg.Recorder = discard{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.SweepPeriod <= 0 {
		cfg.SweepPeriod = DefaultSweepPeriod
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "access-grants-controller")
	c := &Controller{cfg: cfg, log: log, store: store{cfg.Client, cfg.Namespace}}
	if len(cfg.Clusters) == 0 {
		c.clusters = []clusterBindings{{isDefault: true, bindings: bindings{client: cfg.Kube, log: log}}}
	}
	for _, cl := range cfg.Clusters {
		c.clusters = append(c.clusters, clusterBindings{name: cl.Name, isDefault: cl.Default,
			bindings: bindings{client: cl.Kube, log: log.With("cluster", cl.Name)}})
	}
	return c, nil
}

// Run watches AccessRequests and keeps the grant bindings in line until ctx ends. It sweeps
// once the watch has synced and then every SweepPeriod.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("access: the grant controller is already running")
	}
	defer c.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](minRetry, maxRetry),
		workqueue.TypedRateLimitingQueueConfig[string]{Clock: c.cfg.Clock})
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	inf := dynamicinformer.NewFilteredDynamicInformer(c.cfg.Client, GVR, c.cfg.Namespace, 0, cache.Indexers{}, nil).Informer()
	enqueue := func(obj any, skipFinal bool) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			if tomb, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
				u, ok = tomb.Obj.(*unstructured.Unstructured)
			}
		}
		if !ok {
			return
		}
		if skipFinal {
			// Old decided requests need nothing at start-up; the sweep removes any binding
			// they left.
			if st, _, _ := unstructured.NestedString(u.Object, "status", "state"); State(st).Final() {
				return
			}
		}
		q.Add(u.GetName())
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { enqueue(obj, true) },
		UpdateFunc: func(_, obj any) { enqueue(obj, false) },
		DeleteFunc: func(obj any) { enqueue(obj, false) },
	}); err != nil {
		return fmt.Errorf("access: watch access requests: %w", err)
	}
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		c.log.Warn("access request watch failed; retrying", "error", err)
	})
	c.informer = inf
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(ctx)
	}()
	defer func() { cancel(); <-done }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // ctx ended
	}
	c.log.Info("grant controller started", "namespace", c.cfg.Namespace, "sweep_period", c.cfg.SweepPeriod.String())
	go c.sweepLoop(ctx)
	for c.processNext(ctx, q) {
	}
	c.log.Info("grant controller stopped")
	return nil
}

func (c *Controller) sweepLoop(ctx context.Context) {
	t := c.cfg.Clock.NewTicker(c.cfg.SweepPeriod)
	defer t.Stop()
	for {
		if err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("grant sweep failed; next sweep retries", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	name, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(name)
	after, err := c.reconcile(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		c.log.Error("grant reconcile failed; retrying with backoff", "request", name, "error", err)
		q.AddRateLimited(name)
		return true
	}
	q.Forget(name)
	if after > 0 {
		q.AddAfter(name, after)
	}
	return true
}

// cached returns request name as the watch last saw it; nil if it does not exist.
func (c *Controller) cached(name string) (*AccessRequest, error) {
	obj, exists, err := c.informer.GetIndexer().GetByKey(c.cfg.Namespace + "/" + name)
	if err != nil || !exists {
		return nil, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the access request cache", obj)
	}
	return FromUnstructured(u)
}

// reconcile makes the bindings of request name match its state and returns when to look
// again (0: only on the next change).
func (c *Controller) reconcile(ctx context.Context, name string) (time.Duration, error) {
	r, err := c.cached(name)
	if err != nil {
		return 0, err
	}
	if r == nil {
		return 0, c.deleteGrant(ctx, name)
	}
	now := c.cfg.Clock.Now()
	if _, due := Expire(r, now, c.cfg.PendingTTL); due {
		if err := c.expire(ctx, name); err != nil {
			return 0, err
		}
		return 0, c.deleteGrant(ctx, name)
	}
	switch r.effectiveState() {
	case StateApproved:
		// Each cluster on its own: one that is down fails this reconcile (retried with
		// backoff) without holding up the others.
		var errs []error
		for _, cb := range c.clusters {
			var err error
			if covers(r.Spec.Clusters, cb.name, cb.isDefault) {
				err = cb.ensure(ctx, r)
			} else {
				err = cb.deleteGrant(ctx, name)
			}
			if err != nil {
				errs = append(errs, clusterErr(cb.name, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		// Exactly at expiry; the check above then ends the grant.
		return r.Status.ExpiresAt.Sub(now), nil
	case StatePending:
		return r.pendingUntil(c.cfg.PendingTTL).Sub(now), nil
	default:
		return 0, c.deleteGrant(ctx, name)
	}
}

// deleteGrant deletes the bindings of request name on every cluster.
func (c *Controller) deleteGrant(ctx context.Context, name string) error {
	var errs []error
	for _, cb := range c.clusters {
		if err := cb.deleteGrant(ctx, name); err != nil {
			errs = append(errs, clusterErr(cb.name, err))
		}
	}
	return errors.Join(errs...)
}

func clusterErr(cluster string, err error) error {
	if cluster == "" {
		return err
	}
	return fmt.Errorf("cluster %s: %w", cluster, err)
}

// expire marks request name expired if it is due.
func (c *Controller) expire(ctx context.Context, name string) error {
	_, err := expireIfDue(ctx, c.store, c.cfg.Recorder, c.cfg.Clock, c.cfg.PendingTTL, c.log, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("mark %s expired: %w", name, err)
	}
	return nil
}

// Sweep deletes every grant binding whose request is missing or not in force now, and
// re-examines every request that is not final (marking due ones expired). Run calls it at
// start and every SweepPeriod.
func (c *Controller) Sweep(ctx context.Context) error {
	if c.informer == nil || !c.informer.HasSynced() {
		return errors.New("access: Sweep needs a running controller whose watch has synced")
	}
	now := c.cfg.Clock.Now()
	var errs []error
	for _, cb := range c.clusters {
		active := func(name string) bool {
			r, err := c.cached(name)
			return err == nil && r != nil && r.ActiveAt(now) && covers(r.Spec.Clusters, cb.name, cb.isDefault)
		}
		if err := cb.sweep(ctx, active); err != nil {
			errs = append(errs, clusterErr(cb.name, err))
		}
	}
	for _, obj := range c.informer.GetIndexer().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		r, err := FromUnstructured(u)
		if err != nil || r.effectiveState().Final() {
			continue
		}
		if _, err := c.reconcile(ctx, r.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}
