package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// governance is least privilege as code: RBAC and guardrail sync from the access policy on
// every cluster, access requests (kept on the default cluster), and the grants in force.
type governance struct {
	service    *access.Service
	policy     *policy.Policy
	grants     *access.Grants
	rbac       *rbacsync.Set
	controller *access.Controller
	namespace  string
}

// setupAccess loads the access policy and builds what enforces it. Without a policy file
// there is nothing to do.
func (g *Gateway) setupAccess() error {
	ac := g.cfg.Access
	if ac.PolicyFile == "" {
		return nil
	}
	data, err := os.ReadFile(ac.PolicyFile)
	if err != nil {
		return fmt.Errorf("access.policyFile: %w", err)
	}
	pol, err := policy.Load(data)
	if err != nil {
		return fmt.Errorf("access.policyFile %s: %w", ac.PolicyFile, err)
	}
	// The file may be shared with gateways in front of other clusters: names it targets that
	// are not behind this one are worth a look, not a refusal to start.
	for _, w := range pol.UnknownClusters(g.policyClusters()) {
		g.log.Warn("access policy targets a cluster this gateway does not front", "policy_file", ac.PolicyFile, "problem", w)
	}
	cl := g.defaultCluster()
	rec := g.audit.capture
	svc, err := access.NewService(access.ServiceConfig{
		Client: cl.Dynamic, Namespace: ac.Namespace, Policy: pol, Recorder: rec,
		PendingTTL: ac.PendingTTL.D(), Clusters: g.policyClusters(), Logger: g.log,
	})
	if err != nil {
		return err
	}
	grants, err := access.NewGrants(access.GrantsConfig{Client: cl.Dynamic, Namespace: ac.Namespace, Logger: g.log})
	if err != nil {
		return err
	}
	var kubes []access.ClusterClient
	for i, c := range g.clusters {
		kubes = append(kubes, access.ClusterClient{Name: c.Name, Default: g.cfg.Clusters[i].Default, Kube: c.Client})
	}
	ctrl, err := access.NewController(access.ControllerConfig{
		Clusters: kubes, Client: cl.Dynamic, Namespace: ac.Namespace, Recorder: rec,
		PendingTTL: ac.PendingTTL.D(), Logger: g.log,
	})
	if err != nil {
		return err
	}
	// One controller per cluster, each with the policy as that cluster sees it; one Lease
	// (on the default cluster) lets one replica sync them all.
	var controllers []*rbacsync.Controller
	for _, c := range g.clusters {
		ctl, err := rbacsync.New(rbacsync.Config{
			Cluster: c.Name, Client: c.Client, Policy: pol.ForCluster(g.policyCluster(c.Name)), Logger: g.log,
			OnChange: g.recordRBACChange(c.Name),
		})
		if err != nil {
			return err
		}
		controllers = append(controllers, ctl)
	}
	rbac, err := rbacsync.NewSet(controllers...)
	if err != nil {
		return err
	}
	g.metrics.registry.MustRegister(rbacSyncCollector{rbac})
	g.access = &governance{service: svc, policy: pol, grants: grants, rbac: rbac, controller: ctrl, namespace: ac.Namespace}
	return nil
}

// recordRBACChange returns the OnChange of cluster's controller: each change is an audit event.
func (g *Gateway) recordRBACChange(cluster string) func(policy.Change) {
	rec := g.audit.capture
	return func(c policy.Change) {
		e := &event.Event{Kind: event.KindRBACChange, Cluster: cluster, Verb: string(c.Action),
			APIGroup: changeGroup(c.Kind), APIVersion: "v1", Resource: rbacResource(c.Kind),
			Namespace: c.Namespace, Name: c.Name,
			Extra: map[string]string{"details": fmt.Sprint(c.Details), "by": "rbacsync", "kind": c.Kind}}
		e.SetStateOutcome(rbacChangeStatus(c.Action), "")
		if err := rec.Record(e); err != nil {
			g.log.Error("RBAC change not recorded in the audit log", "cluster", cluster, "kind", c.Kind, "name", c.Name, "error", err.Error())
		}
	}
}

// policyClusters are the clusters behind the gateway as the policy's targeting sees them.
func (g *Gateway) policyClusters() []policy.Cluster {
	out := make([]policy.Cluster, len(g.cfg.Clusters))
	for i, c := range g.cfg.Clusters {
		out[i] = policy.Cluster{Name: c.Name, Labels: c.Labels}
	}
	return out
}

func (g *Gateway) policyCluster(name string) policy.Cluster {
	for _, c := range g.policyClusters() {
		if c.Name == name {
			return c
		}
	}
	return policy.Cluster{Name: name}
}

// runAccess starts the grants cache on this replica and competes for the Lease under which
// one replica syncs RBAC and ends grants on time.
func (g *Gateway) runAccess(ctx context.Context) (wait func()) {
	if g.access == nil {
		return func() {}
	}
	go g.access.grants.Run(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := g.access.rbac.RunLeaderElected(ctx, rbacsync.LeaderConfig{
			Client: g.defaultCluster().Client, Namespace: g.access.namespace, Identity: rbacsync.DefaultIdentity(),
			AlsoRun: g.access.controller.Run,
		})
		if err != nil {
			g.log.Error("RBAC sync and grant expiry are not running", "error", err.Error())
		}
	}()
	// Once ctx ends, the Lease is released before wait returns, so a stopped gateway never
	// writes it after its successor (or an operator) has. An API server that does not answer
	// holds the shutdown up for 10 s at most.
	return func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.log.Warn("RBAC sync did not stop within 10s; its Lease may be released late")
		}
	}
}

// withGrants adds the groups of the user's access grants in force on cluster to the identity
// the proxy impersonates. The gateway checks expiry itself on every request, so access ends
// on time even if the controller that removes grant bindings is down; a grant for another
// cluster adds nothing here even though its group name is the same everywhere.
func withGrants(next http.Handler, grants *access.Grants, cluster string, isDefault bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := authn.IdentityFrom(r.Context())
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		active := slices.DeleteFunc(grants.ActiveGrants(id.User, time.Now()),
			func(gr access.Grant) bool { return !gr.Covers(cluster, isDefault) })
		if len(active) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		elevated := *id
		elevated.Groups = slices.Clone(id.Groups)
		ids := make([]string, 0, len(active))
		for _, gr := range active {
			if !slices.Contains(elevated.Groups, gr.Group) {
				elevated.Groups = append(elevated.Groups, gr.Group)
			}
			ids = append(ids, gr.Request)
		}
		if st := requestctx.From(r.Context()); st != nil {
			st.GrantIDs = ids
		}
		next.ServeHTTP(w, r.WithContext(authn.WithIdentity(r.Context(), &elevated)))
	})
}

// rbacResource is the API resource of an RBAC kind: "ClusterRoleBinding" is
// "clusterrolebindings", as request records name it.
func rbacResource(kind string) string {
	if kind == "NetworkPolicy" {
		return "networkpolicies"
	}
	return strings.ToLower(kind) + "s"
}

// changeGroup is the API group of an object the controller changed: RBAC objects, or a
// guardrail's admission policies, NetworkPolicies and namespace labels.
func changeGroup(kind string) string {
	switch kind {
	case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
		return "admissionregistration.k8s.io"
	case "NetworkPolicy":
		return "networking.k8s.io"
	case "Namespace":
		return ""
	}
	return "rbac.authorization.k8s.io"
}

// rbacChangeStatus is what the API server answered the write that made an applied change:
// 201 for a create (a replace ends with one), 200 for an update or a delete.
func rbacChangeStatus(a policy.Action) int {
	if a == policy.ActionCreate || a == policy.ActionReplace {
		return http.StatusCreated
	}
	return http.StatusOK
}
