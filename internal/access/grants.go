package access

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Grant is an approved request in force: while it is, the gateway adds Group to its user's
// impersonated groups.
type Grant struct {
	Request     string
	Elevation   string
	Group       string
	RoleRef     RoleRef
	Namespaces  []string
	ClusterWide bool
	// Clusters the grant covers; empty: the default cluster only.
	Clusters  []string
	ExpiresAt time.Time
}

// Covers reports whether the grant holds on cluster (isDefault: it is the default one).
func (g Grant) Covers(cluster string, isDefault bool) bool {
	return covers(g.Clusters, cluster, isDefault)
}

func covers(clusters []string, cluster string, isDefault bool) bool {
	if len(clusters) == 0 {
		return isDefault
	}
	return slices.Contains(clusters, cluster)
}

// activeGrants picks user's requests in force at now, soonest to end first.
func activeGrants(requests []*AccessRequest, user string, now time.Time) []Grant {
	var out []Grant
	for _, r := range requests {
		if r.Spec.Requester.User != user || !r.ActiveAt(now) {
			continue
		}
		out = append(out, Grant{
			Request: r.Name, Elevation: r.Spec.Elevation, Group: GrantGroup(r.Name), RoleRef: r.Spec.RoleRef,
			Namespaces: slices.Clone(r.Spec.Namespaces), ClusterWide: r.Spec.ClusterWide,
			Clusters: slices.Clone(r.Spec.Clusters), ExpiresAt: r.Status.ExpiresAt.Time,
		})
	}
	slices.SortFunc(out, func(a, b Grant) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return strings.Compare(a.Request, b.Request)
	})
	return out
}

// requesterIndex indexes requests by their requester's user name.
const requesterIndex = "requester"

// GrantsConfig configures a Grants cache.
type GrantsConfig struct {
	// Client watches AccessRequests (get, list, watch in Namespace).
	Client dynamic.Interface
	// Namespace holds the requests; default kaccess-system.
	Namespace string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Grants is the gateway's view of the grants in force, kept by a watch on AccessRequests.
// Every replica runs one (not only the leader): the gateway enforces expiry itself, so access
// ends on time even if the grant controller is down.
type Grants struct {
	informer cache.SharedIndexInformer
	log      *slog.Logger
}

// NewGrants returns a cache that is empty until Run has synced it.
func NewGrants(cfg GrantsConfig) (*Grants, error) {
	if cfg.Client == nil {
		return nil, errors.New("access: GrantsConfig.Client is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	inf := dynamicinformer.NewFilteredDynamicInformer(cfg.Client, GVR, cfg.Namespace, 0,
		cache.Indexers{requesterIndex: indexRequester}, nil).Informer()
	g := &Grants{informer: inf, log: cfg.Logger.With("component", "access-grants")}
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		g.log.Warn("access request watch failed; retrying", "error", err)
	})
	return g, nil
}

func indexRequester(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	user, _, _ := unstructured.NestedString(u.Object, "spec", "requester", "user")
	if user == "" {
		return nil, nil
	}
	return []string{user}, nil
}

// Run watches until ctx ends.
func (g *Grants) Run(ctx context.Context) {
	g.informer.RunWithContext(ctx)
}

// HasSynced reports whether the cache has the full list (for /readyz). Before that,
// ActiveGrants returns nothing: no elevation rather than a guess.
func (g *Grants) HasSynced() bool { return g.informer.HasSynced() }

// WaitForSync blocks until the cache has synced or ctx ends, and reports which.
func (g *Grants) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), g.informer.HasSynced)
}

// ActiveGrants returns user's grants in force at now (approved, and now before their
// expiresAt), soonest to end first. The gateway adds each Grant.Group to the user's
// impersonated groups for this request only.
func (g *Grants) ActiveGrants(user string, now time.Time) []Grant {
	if user == "" || !g.informer.HasSynced() {
		return nil
	}
	objs, err := g.informer.GetIndexer().ByIndex(requesterIndex, user)
	if err != nil {
		return nil
	}
	reqs := make([]*AccessRequest, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		r, err := FromUnstructured(u)
		if err != nil {
			g.log.Warn("access request unreadable; ignored", "name", u.GetName(), "error", err)
			continue
		}
		reqs = append(reqs, r)
	}
	return activeGrants(reqs, user, now)
}
