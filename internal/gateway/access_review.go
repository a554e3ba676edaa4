package gateway

import (
	"context"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/rbacsync/policy/review"
)

// maxElevation is policy.MaxElevationDuration.
var maxElevation = func() time.Duration {
	d, err := time.ParseDuration(policy.MaxElevationDuration)
	if err != nil {
		panic(err)
	}
	return d
}()

// accessReviewer answers ReviewAccess: the access policy against the usage summary of the
// default cluster's requests in the audit store.
type accessReviewer struct {
	policy  *policy.Policy
	usage   *query.Engine
	cluster string // the default cluster's name, as its events carry it
	kube    kubernetes.Interface
}

func (r *accessReviewer) ReviewAccess(ctx context.Context, from, to time.Time) (*review.Report, error) {
	used, err := r.usage.Usage(ctx, query.UsageRequest{From: from, To: to, Cluster: r.cluster})
	if err != nil {
		return nil, err
	}
	// A grant in force at the start of the window started at most the longest elevation
	// before it.
	grants, err := r.usage.GrantElevations(ctx, from.Add(-maxElevation), to)
	if err != nil {
		return nil, err
	}
	in := review.Input{Policy: r.policy, Usage: make([]review.Usage, len(used)), Grants: grants}
	for i, u := range used {
		// RBAC saw the impersonated groups; the user's own are there too, so a binding is
		// counted as used on either (the safe side: more is kept).
		groups := slices.Clone(u.Groups)
		for _, g := range u.ImpersonatedGroups {
			if !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
		in.Usage[i] = review.Usage{User: u.User, Groups: groups, Verb: u.Verb, APIGroup: u.APIGroup,
			Resource: u.Resource, Subresource: u.Subresource, Namespace: u.Namespace, GrantIDs: u.GrantIDs, Count: u.Count}
	}
	if slices.ContainsFunc(r.policy.Bindings, func(b policy.Binding) bool { return b.NamespaceSelector != nil }) {
		// Which namespaces a selector picks is known only now, from the cluster.
		list, err := r.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list namespaces for the bindings by selector: %w", err)
		}
		for _, ns := range list.Items {
			in.Namespaces = append(in.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		}
	}
	return review.Run(in)
}
