// Package rbacsync makes a cluster's RBAC match kaccess's access policy: it creates, updates
// and prunes the objects kaccess manages (and only those), repairs drift as soon as a watch
// reports it, follows namespaces as they appear, and runs on one gateway replica at a time
// (a Kubernetes Lease). `kaccess policy plan` reads the cluster with the same code, so the
// plan it prints is the change the controller would apply.
package rbacsync

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// ManagedSelector selects the objects this controller owns: those policy.Desired labels. It
// requires the policy-role label as well as managed-by, so other kaccess objects labelled
// managed-by=kaccess (the revocation ConfigMap, per-grant bindings) are never pruned here.
const ManagedSelector = policy.ManagedByLabel + "=" + policy.ManagedByValue + "," + policy.RoleLabel

// GuardrailSelector selects the guardrail objects this controller owns.
const GuardrailSelector = policy.ManagedByLabel + "=" + policy.ManagedByValue + "," + policy.GuardrailLabel

// State is what one sync pass reads: every namespace with its labels, and the managed RBAC
// objects.
type State struct {
	Namespaces []policy.Namespace
	Managed    []policy.Object
	// Terminating names the namespaces being deleted: they take no new objects (the API
	// server refuses them), but keep the ones they have until they are gone.
	Terminating map[string]bool
	// Now is the time guardrail exemptions are judged at; zero means time.Now().
	Now time.Time
}

// ReadState lists namespaces, the managed ClusterRoles, Roles, ClusterRoleBindings and
// RoleBindings, and the managed guardrail objects (ValidatingAdmissionPolicies, their
// bindings, NetworkPolicies). Any failed list fails the whole read: a partial state (say, no namespaces
// because their list was refused) would plan the deletion of every RoleBinding.
func ReadState(ctx context.Context, client kubernetes.Interface) (*State, error) {
	s := &State{}
	nss, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	for _, ns := range nss.Items {
		s.Namespaces = append(s.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		if ns.DeletionTimestamp != nil {
			if s.Terminating == nil {
				s.Terminating = map[string]bool{}
			}
			s.Terminating[ns.Name] = true
		}
	}
	managed := metav1.ListOptions{LabelSelector: ManagedSelector}
	rbac := client.RbacV1()
	crs, err := rbac.ClusterRoles().List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list managed clusterroles: %w", err)
	}
	for i := range crs.Items {
		s.Managed = append(s.Managed, &crs.Items[i])
	}
	roles, err := rbac.Roles("").List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list managed roles: %w", err)
	}
	for i := range roles.Items {
		s.Managed = append(s.Managed, &roles.Items[i])
	}
	crbs, err := rbac.ClusterRoleBindings().List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list managed clusterrolebindings: %w", err)
	}
	for i := range crbs.Items {
		s.Managed = append(s.Managed, &crbs.Items[i])
	}
	rbs, err := rbac.RoleBindings("").List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list managed rolebindings: %w", err)
	}
	for i := range rbs.Items {
		s.Managed = append(s.Managed, &rbs.Items[i])
	}
	guarded := metav1.ListOptions{LabelSelector: GuardrailSelector}
	adm := client.AdmissionregistrationV1()
	vaps, err := adm.ValidatingAdmissionPolicies().List(ctx, guarded)
	if err != nil {
		return nil, fmt.Errorf("list managed validatingadmissionpolicies: %w", err)
	}
	for i := range vaps.Items {
		s.Managed = append(s.Managed, &vaps.Items[i])
	}
	vapbs, err := adm.ValidatingAdmissionPolicyBindings().List(ctx, guarded)
	if err != nil {
		return nil, fmt.Errorf("list managed validatingadmissionpolicybindings: %w", err)
	}
	for i := range vapbs.Items {
		s.Managed = append(s.Managed, &vapbs.Items[i])
	}
	nps, err := client.NetworkingV1().NetworkPolicies("").List(ctx, guarded)
	if err != nil {
		return nil, fmt.Errorf("list managed networkpolicies: %w", err)
	}
	for i := range nps.Items {
		s.Managed = append(s.Managed, &nps.Items[i])
	}
	return s, nil
}

// PlanFor returns the changes that make the state match the policy.
func PlanFor(p *policy.Policy, s *State) (policy.Changes, error) {
	desired, err := policy.Desired(p, s.Namespaces)
	if err != nil {
		return nil, err
	}
	now := s.Now
	if now.IsZero() {
		now = time.Now()
	}
	guardrails, err := policy.DesiredGuardrails(p, s.Namespaces, now)
	if err != nil {
		return nil, err
	}
	changes, err := policy.Plan(append(desired.All(), guardrails.All()...), s.Managed)
	if err != nil {
		return nil, err
	}
	var live []policy.Namespace // terminating namespaces refuse label changes too
	for _, ns := range s.Namespaces {
		if !s.Terminating[ns.Name] {
			live = append(live, ns)
		}
	}
	changes = append(changes, policy.PlanNamespaceLabels(guardrails.NamespaceLabels, live)...)
	// Drop creates the API server would refuse, so the plan holds only what can be applied.
	kept := changes[:0]
	for _, c := range changes {
		if c.Action == policy.ActionCreate && s.Terminating[c.Namespace] {
			continue
		}
		kept = append(kept, c)
	}
	return kept, nil
}

// PlanCluster reads the cluster and plans: what `kaccess policy plan` prints.
func PlanCluster(ctx context.Context, client kubernetes.Interface, p *policy.Policy) (policy.Changes, error) {
	s, err := ReadState(ctx, client)
	if err != nil {
		return nil, err
	}
	return PlanFor(p, s)
}
