package rbacsync

import (
	"context"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// watch starts informers that turn every change to a managed object, and every namespace
// that appears, goes or changes labels, into a pass. The informers' caches are not read:
// each pass lists afresh, so a pass never acts on a cache that lags behind its own writes.
// It returns a function that stops them and waits for their goroutines.
func (c *Controller) watch(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) func() {
	ctx, cancel := context.WithCancel(ctx)
	add := func() {
		// After a failed pass a retry is scheduled with backoff; events must not bypass it, or
		// an outage plus a busy cluster would retry at the full pass rate.
		if q.NumRequeues(syncKey) == 0 {
			q.Add(syncKey)
		}
	}
	trigger := func(any) { add() }
	onAny := cache.ResourceEventHandlerFuncs{
		AddFunc:    trigger,
		UpdateFunc: func(_, _ any) { add() },
		DeleteFunc: trigger,
	}
	// A label-selected informer also reports an object losing the label as a delete, so a
	// managed object someone relabels by hand triggers a pass too.
	managed := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ManagedSelector }))
	rbac := managed.Rbac().V1()
	guarded := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = GuardrailSelector }))
	adm := guarded.Admissionregistration().V1()
	namespaces := informers.NewSharedInformerFactory(c.cfg.Client, 0)
	all := []cache.SharedIndexInformer{
		rbac.ClusterRoles().Informer(), rbac.Roles().Informer(),
		rbac.ClusterRoleBindings().Informer(), rbac.RoleBindings().Informer(),
		adm.ValidatingAdmissionPolicies().Informer(), adm.ValidatingAdmissionPolicyBindings().Informer(),
		guarded.Networking().V1().NetworkPolicies().Informer(),
		namespaces.Core().V1().Namespaces().Informer(),
	}
	for i, inf := range all {
		handler := cache.ResourceEventHandler(onAny)
		if i == len(all)-1 {
			// Namespaces change status and annotations often; only their labels matter here.
			handler = cache.ResourceEventHandlerFuncs{
				AddFunc: trigger, DeleteFunc: trigger,
				UpdateFunc: func(oldObj, newObj any) {
					o, ok1 := oldObj.(*corev1.Namespace)
					n, ok2 := newObj.(*corev1.Namespace)
					if !ok1 || !ok2 || !maps.Equal(o.Labels, n.Labels) {
						add()
					}
				},
			}
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			c.log.Error("rbac sync cannot watch; relying on the periodic resync", "error", err)
		}
		// The default handler logs through klog; failures belong in our log, once per retry.
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, r *cache.Reflector, err error) {
			c.log.Warn("rbac sync watch failed; retrying", "resource", r.TypeDescription(), "error", err)
		})
	}
	managed.Start(ctx.Done())
	guarded.Start(ctx.Done())
	namespaces.Start(ctx.Done())
	return func() {
		cancel() // Shutdown waits for the informers, which stop when ctx ends
		managed.Shutdown()
		guarded.Shutdown()
		namespaces.Shutdown()
	}
}
