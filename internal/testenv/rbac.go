package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// rbacSettleTimeout bounds the wait for the RBAC authorizer's informers to see a change.
const rbacSettleTimeout = 10 * time.Second

// User returns an RBAC subject for a user name (static token or impersonated).
func User(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

// Group returns an RBAC subject for a group name.
func Group(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

// EnsureNamespace creates namespace name unless it exists. There is no controller-manager,
// so a deleted namespace stays Terminating forever: use fresh names rather than deleting.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	_, err := c.admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// GrantRole creates or updates a Role and a RoleBinding both called name in namespace, giving
// rules to subjects; namespace "" makes a ClusterRole and ClusterRoleBinding instead. It
// returns once the API server's authorizer allows the first rule to every subject.
func (c *Cluster) GrantRole(ctx context.Context, namespace, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) error {
	if len(subjects) == 0 {
		return fmt.Errorf("grant role %s: no subjects given", name)
	}
	meta := metav1.ObjectMeta{Name: name, Namespace: namespace}
	rbac := c.admin.RbacV1()
	var err error
	if namespace == "" {
		err = upsert(ctx, rbac.ClusterRoles(), &rbacv1.ClusterRole{ObjectMeta: meta, Rules: rules})
		if err == nil {
			err = upsert(ctx, rbac.ClusterRoleBindings(), &rbacv1.ClusterRoleBinding{ObjectMeta: meta, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}})
		}
	} else {
		err = upsert(ctx, rbac.Roles(namespace), &rbacv1.Role{ObjectMeta: meta, Rules: rules})
		if err == nil {
			err = upsert(ctx, rbac.RoleBindings(namespace), &rbacv1.RoleBinding{ObjectMeta: meta, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}})
		}
	}
	if err != nil {
		return fmt.Errorf("grant role %s/%s: %w", namespace, name, err)
	}
	if len(rules) == 0 {
		return nil
	}
	for _, s := range subjects {
		if err := c.waitAllowed(ctx, namespace, s, rules[0]); err != nil {
			return fmt.Errorf("grant role %s/%s: %w", namespace, name, err)
		}
	}
	return nil
}

// RevokeRole deletes what GrantRole(ctx, namespace, name, ...) made; missing objects are fine.
func (c *Cluster) RevokeRole(ctx context.Context, namespace, name string) error {
	rbac := c.admin.RbacV1()
	var errs []error
	if namespace == "" {
		errs = append(errs, rbac.ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}),
			rbac.ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}))
	} else {
		errs = append(errs, rbac.RoleBindings(namespace).Delete(ctx, name, metav1.DeleteOptions{}),
			rbac.Roles(namespace).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	for i, err := range errs {
		if apierrors.IsNotFound(err) {
			errs[i] = nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("revoke role %s/%s: %w", namespace, name, err)
	}
	return nil
}

// applyRBACFile creates the manifest's objects as shipped, then binds its ClusterRole
// kaccess-gateway to the static-token user kaccess-gateway (the manifest binds it to a
// ServiceAccount, whose tokens need a controller we do not run).
func (c *Cluster) applyRBACFile(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	rbac := c.admin.RbacV1()
	var gatewayRole *rbacv1.ClusterRole
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("split YAML documents: %w", err)
		}
		if js, err := yaml.YAMLToJSON(doc); err != nil || strings.TrimSpace(string(js)) == "null" {
			continue // comments only; a real syntax error shows up in Decode below
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			err = c.EnsureNamespace(ctx, o.Name)
		case *corev1.ServiceAccount:
			if err = c.EnsureNamespace(ctx, o.Namespace); err == nil {
				err = upsert(ctx, c.admin.CoreV1().ServiceAccounts(o.Namespace), o)
			}
		case *rbacv1.ClusterRole:
			err = upsert(ctx, rbac.ClusterRoles(), o)
			if o.Name == GatewayUser {
				gatewayRole = o
			}
		case *rbacv1.ClusterRoleBinding:
			o.Subjects = withStaticGatewayUser(o.Subjects)
			err = upsert(ctx, rbac.ClusterRoleBindings(), o)
		case *rbacv1.Role:
			if err = c.EnsureNamespace(ctx, o.Namespace); err == nil {
				err = upsert(ctx, rbac.Roles(o.Namespace), o)
			}
		case *rbacv1.RoleBinding:
			o.Subjects = withStaticGatewayUser(o.Subjects)
			if err = c.EnsureNamespace(ctx, o.Namespace); err == nil {
				err = upsert(ctx, rbac.RoleBindings(o.Namespace), o)
			}
		default:
			err = fmt.Errorf("unsupported kind %T: extend testenv.applyRBACFile", obj)
		}
		if err != nil {
			return err
		}
	}
	if gatewayRole == nil || len(gatewayRole.Rules) == 0 {
		return fmt.Errorf("no ClusterRole %s with rules in the manifest", GatewayUser)
	}
	return c.waitAllowed(ctx, "", User(GatewayUser), gatewayRole.Rules[0])
}

// withStaticGatewayUser adds the static-token user kaccess-gateway wherever the manifest binds
// the gateway's ServiceAccount, so tests run with exactly the shipped permissions.
func withStaticGatewayUser(subjects []rbacv1.Subject) []rbacv1.Subject {
	for _, s := range subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == GatewayUser {
			return append(subjects, User(GatewayUser))
		}
	}
	return subjects
}

// crud is the part of a typed client-go client that upsert needs.
type crud[T metav1.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

// upsert creates obj, or replaces the existing object of that name with it.
func upsert[T metav1.Object](ctx context.Context, api crud[T], obj T) error {
	_, err := api.Create(ctx, obj, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := api.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		obj.SetResourceVersion(cur.GetResourceVersion())
		_, err = api.Update(ctx, obj, metav1.UpdateOptions{})
		return err
	})
}

// waitAllowed polls a SubjectAccessReview until the authorizer allows rule to subject: the
// RBAC authorizer reads bindings through informers, so a new grant takes effect a moment
// after it is stored, and tests would otherwise flake on a 403.
func (c *Cluster) waitAllowed(ctx context.Context, namespace string, subject rbacv1.Subject, rule rbacv1.PolicyRule) error {
	spec, ok := reviewSpec(namespace, subject, rule)
	if !ok {
		return nil // nothing to probe (e.g. a rule without verbs)
	}
	ctx, cancel := context.WithTimeout(ctx, rbacSettleTimeout)
	defer cancel()
	for {
		review := &authzv1.SubjectAccessReview{Spec: spec}
		got, err := c.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err == nil && got.Status.Allowed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %q not yet allowed by the authorizer after %s (last error: %v)",
				subject.Kind, subject.Name, rbacSettleTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reviewSpec asks whether subject may do the first thing rule allows.
func reviewSpec(namespace string, subject rbacv1.Subject, rule rbacv1.PolicyRule) (authzv1.SubjectAccessReviewSpec, bool) {
	var spec authzv1.SubjectAccessReviewSpec
	switch subject.Kind {
	case rbacv1.UserKind:
		spec.User = subject.Name
	case rbacv1.GroupKind:
		spec.User, spec.Groups = "kaccess-testenv-probe", []string{subject.Name}
	case rbacv1.ServiceAccountKind:
		spec.User = "system:serviceaccount:" + subject.Namespace + ":" + subject.Name
		spec.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + subject.Namespace}
	default:
		return spec, false
	}
	if len(rule.Verbs) == 0 {
		return spec, false
	}
	if len(rule.NonResourceURLs) > 0 {
		spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: rule.NonResourceURLs[0], Verb: rule.Verbs[0]}
		return spec, true
	}
	if len(rule.APIGroups) == 0 || len(rule.Resources) == 0 {
		return spec, false
	}
	resource, sub, _ := strings.Cut(rule.Resources[0], "/")
	attrs := &authzv1.ResourceAttributes{Namespace: namespace, Verb: rule.Verbs[0],
		Group: rule.APIGroups[0], Resource: resource, Subresource: sub}
	if len(rule.ResourceNames) > 0 {
		attrs.Name = rule.ResourceNames[0]
	}
	spec.ResourceAttributes = attrs
	return spec, true
}
