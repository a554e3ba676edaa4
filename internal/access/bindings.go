package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// grantSelector selects every grant binding; rbacsync's selector (which needs the policy-role
// label) never matches them.
const grantSelector = policy.ManagedByLabel + "=" + policy.ManagedByValue + "," + GrantLabel

// bindings writes the grant bindings: a RoleBinding per namespace or one ClusterRoleBinding,
// each named like the grant group and labelled with the request.
type bindings struct {
	client kubernetes.Interface
	log    *slog.Logger
}

func grantLabels(name string) map[string]string {
	return map[string]string{policy.ManagedByLabel: policy.ManagedByValue, GrantLabel: name}
}

func grantSubjects(name string) []rbacv1.Subject {
	return []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: GrantGroup(name)}}
}

func grantRoleRef(r *AccessRequest) rbacv1.RoleRef {
	return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: r.Spec.RoleRef.Kind, Name: r.Spec.RoleRef.Name}
}

// ensure creates or repairs r's bindings. An object of the same name that is not a grant
// binding of r is left alone (and reported): kaccess never takes over what it did not make.
func (b bindings) ensure(ctx context.Context, r *AccessRequest) error {
	name := GrantGroup(r.Name)
	meta := func(ns string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: grantLabels(r.Name)}
	}
	rbac := b.client.RbacV1()
	if r.Spec.ClusterWide {
		want := &rbacv1.ClusterRoleBinding{ObjectMeta: meta(""), Subjects: grantSubjects(r.Name), RoleRef: grantRoleRef(r)}
		_, err := rbac.ClusterRoleBindings().Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			cur, getErr := rbac.ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
			if getErr != nil {
				return fmt.Errorf("get ClusterRoleBinding %s: %w", name, getErr)
			}
			return b.repair(r.Name, "ClusterRoleBinding", cur.ObjectMeta, cur.RoleRef, want.RoleRef, cur.Subjects,
				func() error {
					return rbac.ClusterRoleBindings().Delete(ctx, name, preconditions(cur.UID, cur.ResourceVersion))
				}, func() error {
					_, err := rbac.ClusterRoleBindings().Create(ctx, want, metav1.CreateOptions{})
					return err
				})
		}
		if err != nil {
			return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
		}
		b.log.Info("grant binding created", "request", r.Name, "kind", "ClusterRoleBinding", "role", r.Spec.RoleRef.String())
		return nil
	}
	var errs []error
	for _, ns := range r.Spec.Namespaces {
		want := &rbacv1.RoleBinding{ObjectMeta: meta(ns), Subjects: grantSubjects(r.Name), RoleRef: grantRoleRef(r)}
		api := rbac.RoleBindings(ns)
		_, err := api.Create(ctx, want, metav1.CreateOptions{})
		switch {
		case apierrors.IsAlreadyExists(err):
			cur, getErr := api.Get(ctx, name, metav1.GetOptions{})
			if getErr != nil {
				errs = append(errs, fmt.Errorf("get RoleBinding %s/%s: %w", ns, name, getErr))
				continue
			}
			errs = append(errs, b.repair(r.Name, "RoleBinding", cur.ObjectMeta, cur.RoleRef, want.RoleRef, cur.Subjects,
				func() error { return api.Delete(ctx, name, preconditions(cur.UID, cur.ResourceVersion)) },
				func() error { _, err := api.Create(ctx, want, metav1.CreateOptions{}); return err }))
		case apierrors.IsNotFound(err):
			// The namespace does not exist (yet): nothing to grant there. The sweep retries.
			b.log.Warn("grant binding not created: namespace missing", "request", r.Name, "namespace", ns)
		case err != nil:
			errs = append(errs, fmt.Errorf("create RoleBinding %s/%s: %w", ns, name, err))
		default:
			b.log.Info("grant binding created", "request", r.Name, "kind", "RoleBinding", "namespace", ns,
				"role", r.Spec.RoleRef.String())
		}
	}
	return errors.Join(errs...)
}

// repair replaces an existing grant binding of request whose roleRef or subjects are not
// want's (a roleRef cannot be changed in place, so it is deleted and created again).
func (b bindings) repair(request, kind string, meta metav1.ObjectMeta, ref, want rbacv1.RoleRef,
	subjects []rbacv1.Subject, del, create func() error) error {
	if meta.Labels[GrantLabel] != request || meta.Labels[policy.ManagedByLabel] != policy.ManagedByValue {
		b.log.Warn("grant binding not created: an object kaccess does not manage has its name",
			"request", request, "kind", kind, "namespace", meta.Namespace, "name", meta.Name)
		return nil
	}
	if ref == want && slices.Equal(subjects, grantSubjects(request)) {
		return nil
	}
	if err := del(); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("replace %s %s/%s: %w", kind, meta.Namespace, meta.Name, err)
	}
	if err := create(); err != nil {
		return fmt.Errorf("replace %s %s/%s: %w", kind, meta.Namespace, meta.Name, err)
	}
	b.log.Info("grant binding repaired", "request", request, "kind", kind, "namespace", meta.Namespace)
	return nil
}

// deleteGrant deletes every binding of request name.
func (b bindings) deleteGrant(ctx context.Context, name string) error {
	return b.sweep(ctx, func(request string) bool { return request != name })
}

// sweep deletes every grant binding whose request keep says no to.
func (b bindings) sweep(ctx context.Context, keep func(request string) bool) error {
	rbac := b.client.RbacV1()
	sel := metav1.ListOptions{LabelSelector: grantSelector}
	var errs []error
	crbs, err := rbac.ClusterRoleBindings().List(ctx, sel)
	if err != nil {
		errs = append(errs, fmt.Errorf("list grant ClusterRoleBindings: %w", err))
	} else {
		for _, o := range crbs.Items {
			if req := o.Labels[GrantLabel]; !keep(req) {
				err := rbac.ClusterRoleBindings().Delete(ctx, o.Name, preconditions(o.UID, o.ResourceVersion))
				errs = append(errs, b.deleted(err, req, "ClusterRoleBinding", "", o.Name))
			}
		}
	}
	rbs, err := rbac.RoleBindings("").List(ctx, sel)
	if err != nil {
		errs = append(errs, fmt.Errorf("list grant RoleBindings: %w", err))
	} else {
		for _, o := range rbs.Items {
			if req := o.Labels[GrantLabel]; !keep(req) {
				err := rbac.RoleBindings(o.Namespace).Delete(ctx, o.Name, preconditions(o.UID, o.ResourceVersion))
				errs = append(errs, b.deleted(err, req, "RoleBinding", o.Namespace, o.Name))
			}
		}
	}
	return errors.Join(errs...)
}

func (b bindings) deleted(err error, request, kind, ns, name string) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s %s/%s: %w", kind, ns, name, err)
	}
	b.log.Info("grant binding deleted", "request", request, "kind", kind, "namespace", ns, "name", name)
	return nil
}

func preconditions(uid types.UID, rv string) metav1.DeleteOptions {
	return metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}}
}
