package policy

import (
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Object is one object kaccess owns: *rbacv1.ClusterRole, *rbacv1.Role,
// *rbacv1.ClusterRoleBinding, *rbacv1.RoleBinding, or a guardrail's
// *admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding or
// *networkingv1.NetworkPolicy. Plan rejects any other type.
type Object interface {
	metav1.Object
}

// Action is what a plan does to one object.
type Action string

// Actions, in the order Render lists them for one object kind.
const (
	ActionCreate  Action = "create"
	ActionUpdate  Action = "update"
	ActionReplace Action = "replace" // delete then create: roleRef is immutable
	ActionDelete  Action = "delete"
)

// Change is one step of a plan. Desired is nil for deletes, Current nil for creates.
type Change struct {
	Action    Action
	Kind      string
	Namespace string
	Name      string
	// Details say what differs ("subjects: +corp:x -corp:y", "rules changed").
	Details []string
	Desired Object
	Current Object
}

// Changes is a plan, sorted by kind (roles before bindings), namespace and name.
type Changes []Change

// Plan compares desired objects with the managed objects the cluster holds (current, already
// filtered by the managed-by label) and returns what must change: creates for missing objects,
// updates for changed rules, subjects or labels, replaces for bindings whose roleRef changed,
// and deletes for managed objects no longer desired. Equal inputs give no changes.
func Plan(desired, current []Object) (Changes, error) {
	want, err := index(desired, "desired")
	if err != nil {
		return nil, err
	}
	have, err := index(current, "current")
	if err != nil {
		return nil, err
	}
	var out Changes
	for k, d := range want {
		c, ok := have[k]
		if !ok {
			out = append(out, change(ActionCreate, k, nil, d, c))
			continue
		}
		if replace, details := compare(d, c); replace {
			out = append(out, change(ActionReplace, k, details, d, c))
		} else if len(details) > 0 {
			out = append(out, change(ActionUpdate, k, details, d, c))
		}
	}
	for k, c := range have {
		if _, ok := want[k]; !ok {
			out = append(out, change(ActionDelete, k, nil, nil, c))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if kindOrder[a.Kind] != kindOrder[b.Kind] {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, nil
}

var kindOrder = map[string]int{"ClusterRole": 0, "Role": 1, "ClusterRoleBinding": 2, "RoleBinding": 3,
	// A policy before its binding, so a binding never points at a policy not yet there.
	"ValidatingAdmissionPolicy": 4, "ValidatingAdmissionPolicyBinding": 5, "NetworkPolicy": 6, "Namespace": 7}

type key struct{ kind, namespace, name string }

func change(a Action, k key, details []string, d, c Object) Change {
	return Change{Action: a, Kind: k.kind, Namespace: k.namespace, Name: k.name, Details: details, Desired: d, Current: c}
}

func index(objs []Object, what string) (map[key]Object, error) {
	m := make(map[key]Object, len(objs))
	for i, o := range objs {
		kind, err := kindOf(o)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", what, i, err)
		}
		k := key{kind, o.GetNamespace(), o.GetName()}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%s[%d]: duplicate %s %s", what, i, kind, displayName(k.namespace, k.name))
		}
		m[k] = o
	}
	return m, nil
}

func kindOf(o Object) (string, error) {
	switch o.(type) {
	case *rbacv1.ClusterRole:
		return "ClusterRole", nil
	case *rbacv1.Role:
		return "Role", nil
	case *rbacv1.ClusterRoleBinding:
		return "ClusterRoleBinding", nil
	case *rbacv1.RoleBinding:
		return "RoleBinding", nil
	case *admissionv1.ValidatingAdmissionPolicy:
		return "ValidatingAdmissionPolicy", nil
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		return "ValidatingAdmissionPolicyBinding", nil
	case *networkingv1.NetworkPolicy:
		return "NetworkPolicy", nil
	default:
		return "", fmt.Errorf("unsupported object type %T", o)
	}
}

// compare returns whether d and c (same kind) need a replace, and what differs.
func compare(d, c Object) (replace bool, details []string) {
	switch dd := d.(type) {
	case *rbacv1.ClusterRole:
		details = rulesDiff(dd.Rules, c.(*rbacv1.ClusterRole).Rules)
	case *rbacv1.Role:
		details = rulesDiff(dd.Rules, c.(*rbacv1.Role).Rules)
	case *rbacv1.ClusterRoleBinding:
		cc := c.(*rbacv1.ClusterRoleBinding)
		replace, details = bindingDiff(dd.RoleRef, cc.RoleRef, dd.Subjects, cc.Subjects)
	case *rbacv1.RoleBinding:
		cc := c.(*rbacv1.RoleBinding)
		replace, details = bindingDiff(dd.RoleRef, cc.RoleRef, dd.Subjects, cc.Subjects)
	case *admissionv1.ValidatingAdmissionPolicy:
		details = specDiff(dd.Spec, c.(*admissionv1.ValidatingAdmissionPolicy).Spec)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		cc := c.(*admissionv1.ValidatingAdmissionPolicyBinding)
		details = specDiff(dd.Spec, cc.Spec)
		if len(details) > 0 && !equality.Semantic.DeepEqual(dd.Spec.ValidationActions, cc.Spec.ValidationActions) {
			details = []string{fmt.Sprintf("validationActions: %v -> %v", cc.Spec.ValidationActions, dd.Spec.ValidationActions)}
		}
	case *networkingv1.NetworkPolicy:
		details = specDiff(dd.Spec, c.(*networkingv1.NetworkPolicy).Spec)
	}
	// Only the labels kaccess sets are compared: others may be added by people or tools.
	for _, l := range sortedKeys(d.GetLabels()) {
		if v, ok := c.GetLabels()[l]; !ok || v != d.GetLabels()[l] {
			details = append(details, "labels changed")
			break
		}
	}
	return replace, details
}

// specDiff compares the specs of guardrail objects, which the renderer fills in with the API
// server's defaults, so a read-back object compares equal.
func specDiff(d, c any) []string {
	if equality.Semantic.DeepEqual(d, c) {
		return nil
	}
	return []string{"spec changed"}
}

func rulesDiff(d, c []rbacv1.PolicyRule) []string {
	if len(d) == 0 && len(c) == 0 || equality.Semantic.DeepEqual(d, c) {
		return nil
	}
	if len(c) != len(d) {
		return []string{fmt.Sprintf("rules: %d -> %d", len(c), len(d))}
	}
	return []string{"rules changed"}
}

func bindingDiff(dRef, cRef rbacv1.RoleRef, dSub, cSub []rbacv1.Subject) (bool, []string) {
	if dRef != cRef {
		return true, []string{fmt.Sprintf("roleRef changed: %s/%s -> %s/%s", cRef.Kind, cRef.Name, dRef.Kind, dRef.Name)}
	}
	want, have := subjectSet(dSub), subjectSet(cSub)
	var parts []string
	for _, s := range sortedKeys(want) {
		if !have[s] {
			parts = append(parts, "+"+s)
		}
	}
	for _, s := range sortedKeys(have) {
		if !want[s] {
			parts = append(parts, "-"+s)
		}
	}
	if len(parts) == 0 {
		return false, nil
	}
	return false, []string{"subjects: " + strings.Join(parts, " ")}
}

// subjectSet names groups by their name and other subjects as Kind:namespace/name.
func subjectSet(subjects []rbacv1.Subject) map[string]bool {
	m := map[string]bool{}
	for _, s := range subjects {
		switch {
		case s.Kind == rbacv1.GroupKind:
			m[s.Name] = true
		case s.Namespace != "":
			m[s.Kind+":"+s.Namespace+"/"+s.Name] = true
		default:
			m[s.Kind+":"+s.Name] = true
		}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func displayName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// Counts returns how many changes of each action the plan holds.
func (cs Changes) Counts() map[Action]int {
	m := map[Action]int{}
	for _, c := range cs {
		m[c.Action]++
	}
	return m
}

// Render prints the plan, one line per change and a summary, in a stable order:
//
//   - create RoleBinding team-a/kaccess:devs:edit
//     ~ update RoleBinding team-b/kaccess:devs:edit (subjects: +corp:x -corp:y)
//     -/+ replace ClusterRoleBinding kaccess:ops:view (roleRef changed: ...)
//   - delete RoleBinding old/kaccess:devs:edit
func (cs Changes) Render(w io.Writer) error {
	var b strings.Builder
	if len(cs) == 0 {
		b.WriteString("No changes: the cluster matches the policy.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %s %s %s", symbol[c.Action], c.Action, c.Kind, displayName(c.Namespace, c.Name))
		if len(c.Details) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(c.Details, "; "))
		}
		b.WriteByte('\n')
	}
	n := cs.Counts()
	fmt.Fprintf(&b, "Plan: %d to create, %d to update, %d to replace, %d to delete.\n",
		n[ActionCreate], n[ActionUpdate], n[ActionReplace], n[ActionDelete])
	_, err := io.WriteString(w, b.String())
	return err
}

var symbol = map[Action]string{ActionCreate: "+", ActionUpdate: "~", ActionReplace: "-/+", ActionDelete: "-"}
