package rbacsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// errConflict marks a create refused because an object kaccess does not manage already has
// the name: kaccess leaves it alone, and retrying would not help.
var errConflict = errors.New("an object of that name exists without the label " +
	policy.ManagedByLabel + "=" + policy.ManagedByValue + ": kaccess does not touch it; rename or remove it, or label it to hand it over")

// applier writes one change at a time.
type applier struct{ client kubernetes.Interface }

// apply carries out c. Deletes carry preconditions on the UID and resourceVersion that were
// listed, so an object someone changed since (relabelled by hand, say) is never deleted on
// stale information: the pass fails and the next one decides afresh.
func (a applier) apply(ctx context.Context, c policy.Change) error {
	if c.Kind == "Namespace" {
		return a.patchNamespaceLabels(ctx, c)
	}
	switch c.Action {
	case policy.ActionCreate:
		return a.create(ctx, c.Desired)
	case policy.ActionUpdate:
		return a.update(ctx, c.Desired, c.Current)
	case policy.ActionReplace:
		// roleRef is immutable: the binding must go and come back.
		if err := a.delete(ctx, c.Current); err != nil {
			return err
		}
		return a.create(ctx, c.Desired)
	case policy.ActionDelete:
		return a.delete(ctx, c.Current)
	default:
		return fmt.Errorf("unknown action %q", c.Action)
	}
}

func (a applier) create(ctx context.Context, desired policy.Object) error {
	rbac := a.client.RbacV1()
	var err error
	switch d := desired.(type) {
	case *rbacv1.ClusterRole:
		_, err = rbac.ClusterRoles().Create(ctx, d, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = rbac.Roles(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = rbac.ClusterRoleBindings().Create(ctx, d, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = rbac.RoleBindings(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	case *admissionv1.ValidatingAdmissionPolicy:
		_, err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, d, metav1.CreateOptions{})
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		_, err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, d, metav1.CreateOptions{})
	case *networkingv1.NetworkPolicy:
		_, err = a.client.NetworkingV1().NetworkPolicies(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	default:
		return fmt.Errorf("unsupported object type %T", desired)
	}
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	// Not in the managed list but there: either unmanaged (leave it), or managed but without
	// the policy-role label the list selects on (someone removed it): take it back.
	current, getErr := a.get(ctx, desired)
	if getErr != nil {
		return fmt.Errorf("%w (then get: %v)", err, getErr)
	}
	if current.GetLabels()[policy.ManagedByLabel] != policy.ManagedByValue {
		return errConflict
	}
	if refOf(current) != refOf(desired) {
		if err := a.delete(ctx, current); err != nil {
			return err
		}
		return a.create(ctx, desired)
	}
	return a.update(ctx, desired, current)
}

func (a applier) get(ctx context.Context, o policy.Object) (policy.Object, error) {
	rbac, name, opts := a.client.RbacV1(), o.GetName(), metav1.GetOptions{}
	switch o.(type) {
	case *rbacv1.ClusterRole:
		return rbac.ClusterRoles().Get(ctx, name, opts)
	case *rbacv1.Role:
		return rbac.Roles(o.GetNamespace()).Get(ctx, name, opts)
	case *rbacv1.ClusterRoleBinding:
		return rbac.ClusterRoleBindings().Get(ctx, name, opts)
	case *rbacv1.RoleBinding:
		return rbac.RoleBindings(o.GetNamespace()).Get(ctx, name, opts)
	case *admissionv1.ValidatingAdmissionPolicy:
		return a.client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, opts)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		return a.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, name, opts)
	case *networkingv1.NetworkPolicy:
		return a.client.NetworkingV1().NetworkPolicies(o.GetNamespace()).Get(ctx, name, opts)
	}
	return nil, fmt.Errorf("unsupported object type %T", o)
}

// refOf returns a binding's roleRef, or the zero value for roles.
func refOf(o policy.Object) rbacv1.RoleRef {
	switch b := o.(type) {
	case *rbacv1.ClusterRoleBinding:
		return b.RoleRef
	case *rbacv1.RoleBinding:
		return b.RoleRef
	}
	return rbacv1.RoleRef{}
}

// update writes desired's rules or subjects and labels onto the current object, keeping
// everything else (labels and annotations others added, the resourceVersion for optimistic
// concurrency: a concurrent edit fails the update and the next pass sees it).
func (a applier) update(ctx context.Context, desired, current policy.Object) error {
	rbac := a.client.RbacV1()
	labels := maps.Clone(current.GetLabels())
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, desired.GetLabels())
	var err error
	switch d := desired.(type) {
	case *rbacv1.ClusterRole:
		o := current.(*rbacv1.ClusterRole).DeepCopy()
		o.Labels, o.Rules, o.AggregationRule = labels, d.Rules, d.AggregationRule
		_, err = rbac.ClusterRoles().Update(ctx, o, metav1.UpdateOptions{})
	case *rbacv1.Role:
		o := current.(*rbacv1.Role).DeepCopy()
		o.Labels, o.Rules = labels, d.Rules
		_, err = rbac.Roles(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	case *rbacv1.ClusterRoleBinding:
		o := current.(*rbacv1.ClusterRoleBinding).DeepCopy()
		o.Labels, o.Subjects = labels, d.Subjects
		_, err = rbac.ClusterRoleBindings().Update(ctx, o, metav1.UpdateOptions{})
	case *rbacv1.RoleBinding:
		o := current.(*rbacv1.RoleBinding).DeepCopy()
		o.Labels, o.Subjects = labels, d.Subjects
		_, err = rbac.RoleBindings(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	case *admissionv1.ValidatingAdmissionPolicy:
		o := current.(*admissionv1.ValidatingAdmissionPolicy).DeepCopy()
		o.Labels, o.Spec = labels, *d.Spec.DeepCopy()
		_, err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Update(ctx, o, metav1.UpdateOptions{})
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		o := current.(*admissionv1.ValidatingAdmissionPolicyBinding).DeepCopy()
		o.Labels, o.Spec = labels, *d.Spec.DeepCopy()
		_, err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Update(ctx, o, metav1.UpdateOptions{})
	case *networkingv1.NetworkPolicy:
		o := current.(*networkingv1.NetworkPolicy).DeepCopy()
		o.Labels, o.Spec = labels, *d.Spec.DeepCopy()
		_, err = a.client.NetworkingV1().NetworkPolicies(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	default:
		return fmt.Errorf("unsupported object type %T", desired)
	}
	return err
}

func (a applier) delete(ctx context.Context, current policy.Object) error {
	uid, rv := current.GetUID(), current.GetResourceVersion()
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}}
	rbac, name := a.client.RbacV1(), current.GetName()
	var err error
	switch current.(type) {
	case *rbacv1.ClusterRole:
		err = rbac.ClusterRoles().Delete(ctx, name, opts)
	case *rbacv1.Role:
		err = rbac.Roles(current.GetNamespace()).Delete(ctx, name, opts)
	case *rbacv1.ClusterRoleBinding:
		err = rbac.ClusterRoleBindings().Delete(ctx, name, opts)
	case *rbacv1.RoleBinding:
		err = rbac.RoleBindings(current.GetNamespace()).Delete(ctx, name, opts)
	case *admissionv1.ValidatingAdmissionPolicy:
		err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, name, opts)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		err = a.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, name, opts)
	case *networkingv1.NetworkPolicy:
		err = a.client.NetworkingV1().NetworkPolicies(current.GetNamespace()).Delete(ctx, name, opts)
	default:
		return fmt.Errorf("unsupported object type %T", current)
	}
	if apierrors.IsNotFound(err) {
		return nil // already gone: what we wanted
	}
	return err
}

// patchNamespaceLabels sets and removes the pod-security labels of c on its namespace with a
// merge patch of the labels alone (kaccess owns no namespace; everything else stays as it
// is). The patch carries no resourceVersion: it names each key it changes, and the next pass
// repairs whatever a concurrent edit did.
func (a applier) patchNamespaceLabels(ctx context.Context, c policy.Change) error {
	want, have := c.Desired.GetLabels(), c.Current.GetLabels()
	patch := map[string]any{}
	for k, v := range want {
		if have[k] != v {
			patch[k] = v
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			patch[k] = nil // JSON null removes the key
		}
	}
	if len(patch) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": patch}})
	if err != nil {
		return err
	}
	_, err = a.client.CoreV1().Namespaces().Patch(ctx, c.Name, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}
