package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels on every object kaccess owns. Only objects with ManagedByLabel=ManagedByValue are ever
// updated or pruned.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "kaccess"
	// RoleLabel names the policy role an object comes from.
	RoleLabel = "kaccess.io/policy-role"
	// BindingLabel names the policy binding a binding object comes from.
	BindingLabel = "kaccess.io/policy-binding"
	// NamePrefix starts every generated object name.
	NamePrefix = "kaccess:"
	maxNameLen = 253
)

// Namespace is what Desired needs to know about a namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Objects are the RBAC objects kaccess must own, each list sorted by (namespace,) name.
type Objects struct {
	ClusterRoles        []*rbacv1.ClusterRole
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	RoleBindings        []*rbacv1.RoleBinding
}

// All returns every object as an Object: cluster roles, cluster role bindings, role bindings.
func (o *Objects) All() []Object {
	var all []Object
	for _, x := range o.ClusterRoles {
		all = append(all, x)
	}
	for _, x := range o.ClusterRoleBindings {
		all = append(all, x)
	}
	for _, x := range o.RoleBindings {
		all = append(all, x)
	}
	return all
}

// ClusterRoleName is the name of the ClusterRole made for curated role role.
func ClusterRoleName(role string) string { return objectName(role) }

// BindingName is the name of the (Cluster)RoleBinding made for a binding of role.
func BindingName(binding, role string) string { return objectName(binding, role) }

// objectName joins parts after NamePrefix; names over 253 characters are cut and end with a
// hash of the full name so they stay unique and stable.
func objectName(parts ...string) string {
	name := NamePrefix + strings.Join(parts, ":")
	if len(name) <= maxNameLen {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:])[:10]
	return name[:maxNameLen-len(suffix)] + suffix
}

// Desired returns the exact RBAC objects the policy implies in the given namespaces: a
// ClusterRole per curated role; per binding a ClusterRoleBinding (clusterWide) or a RoleBinding
// in every listed or matching namespace that exists. Listed namespaces that do not exist are
// skipped: Desired is recomputed when namespaces appear. p must be valid.
func Desired(p *Policy, namespaces []Namespace) (*Objects, error) {
	out := &Objects{}
	for _, r := range p.Roles {
		if r.Ref != nil {
			continue
		}
		out.ClusterRoles = append(out.ClusterRoles, &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName(r.Name), Labels: managedLabels(r.Name, "")},
			Rules:      deepCopyRules(r.Rules),
		})
	}
	exists := map[string]bool{}
	for _, ns := range namespaces {
		exists[ns.Name] = true
	}
	for i, b := range p.Bindings {
		r := p.role(b.Role)
		if r == nil {
			return nil, fmt.Errorf("bindings[%d].role: unknown role %q", i, b.Role)
		}
		ref := roleRefFor(r)
		subjects := groupSubjects(b.Groups)
		name := BindingName(b.Name, r.Name)
		meta := func(ns string) metav1.ObjectMeta {
			return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: managedLabels(r.Name, b.Name)}
		}
		switch {
		case b.ClusterWide:
			out.ClusterRoleBindings = append(out.ClusterRoleBindings, &rbacv1.ClusterRoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
				ObjectMeta: meta(""), Subjects: subjects, RoleRef: ref,
			})
			continue
		case b.NamespaceSelector != nil:
			sel, err := metav1.LabelSelectorAsSelector(b.NamespaceSelector)
			if err != nil {
				return nil, fmt.Errorf("bindings[%d].namespaceSelector: %w", i, err)
			}
			for _, ns := range namespaces {
				if sel.Matches(labels.Set(ns.Labels)) {
					out.RoleBindings = append(out.RoleBindings, roleBinding(meta(ns.Name), subjects, ref))
				}
			}
		default:
			for _, ns := range b.Namespaces {
				if exists[ns] {
					out.RoleBindings = append(out.RoleBindings, roleBinding(meta(ns), subjects, ref))
				}
			}
		}
	}
	sort.Slice(out.ClusterRoles, func(i, j int) bool { return out.ClusterRoles[i].Name < out.ClusterRoles[j].Name })
	sort.Slice(out.ClusterRoleBindings, func(i, j int) bool {
		return out.ClusterRoleBindings[i].Name < out.ClusterRoleBindings[j].Name
	})
	sort.Slice(out.RoleBindings, func(i, j int) bool {
		a, b := out.RoleBindings[i], out.RoleBindings[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, nil
}

func roleBinding(meta metav1.ObjectMeta, subjects []rbacv1.Subject, ref rbacv1.RoleRef) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
		ObjectMeta: meta,
		// Each object gets its own slice so a caller may change one without touching another.
		Subjects: append([]rbacv1.Subject(nil), subjects...),
		RoleRef:  ref,
	}
}

func roleRefFor(r *Role) rbacv1.RoleRef {
	if r.Ref != nil {
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: r.Ref.Kind, Name: r.Ref.Name}
	}
	return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: RefKindClusterRole, Name: ClusterRoleName(r.Name)}
}

// groupSubjects returns one Group subject per distinct group, sorted.
func groupSubjects(groups []string) []rbacv1.Subject {
	sorted := append([]string(nil), groups...)
	sort.Strings(sorted)
	var out []rbacv1.Subject
	for i, g := range sorted {
		if i > 0 && g == sorted[i-1] {
			continue
		}
		out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g})
	}
	return out
}

func managedLabels(role, binding string) map[string]string {
	l := map[string]string{ManagedByLabel: ManagedByValue, RoleLabel: role}
	if binding != "" {
		l[BindingLabel] = binding
	}
	return l
}

func deepCopyRules(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(rules))
	for i := range rules {
		rules[i].DeepCopyInto(&out[i])
	}
	return out
}
