package policy

import (
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
)

func mustLoad(t *testing.T, y string) *Policy {
	t.Helper()
	p, err := Load([]byte(y))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

func crb(name, role string, ref rbacv1.RoleRef, groups ...string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess:" + name + ":" + role, Labels: labelsFor(role, name)},
		RoleRef:    ref, Subjects: groups2subjects(groups),
	}
}

func rb(ns, name, role string, ref rbacv1.RoleRef, groups ...string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess:" + name + ":" + role, Namespace: ns, Labels: labelsFor(role, name)},
		RoleRef:    ref, Subjects: groups2subjects(groups),
	}
}

func labelsFor(role, binding string) map[string]string {
	l := map[string]string{"app.kubernetes.io/managed-by": "kaccess", "kaccess.io/policy-role": role}
	if binding != "" {
		l["kaccess.io/policy-binding"] = binding
	}
	return l
}

func groups2subjects(groups []string) []rbacv1.Subject {
	var s []rbacv1.Subject
	for _, g := range groups {
		s = append(s, rbacv1.Subject{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: g})
	}
	return s
}

var (
	deployRef = rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kaccess:deploy"}
	viewRef   = rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"}
)

func TestDesired(t *testing.T) {
	t.Parallel()
	deployRole := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess:deploy", Labels: labelsFor("deploy", "")},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"},
			Verbs: []string{"get", "list", "watch", "update", "patch"}}},
	}
	team := map[string]string{"kaccess.io/team": "true"}
	tests := []struct {
		name       string
		namespaces []Namespace
		want       *Objects
	}{
		{
			name: "no namespaces: cluster objects only",
			want: &Objects{
				ClusterRoles:        []*rbacv1.ClusterRole{deployRole},
				ClusterRoleBindings: []*rbacv1.ClusterRoleBinding{crb("sre", "view", viewRef, "corp:sre")},
			},
		},
		{
			name: "listed and selected namespaces, sorted",
			namespaces: []Namespace{
				{Name: "team-c", Labels: team},
				{Name: "team-b"},
				{Name: "kube-system"},
				{Name: "team-a", Labels: team},
			},
			want: &Objects{
				ClusterRoles:        []*rbacv1.ClusterRole{deployRole},
				ClusterRoleBindings: []*rbacv1.ClusterRoleBinding{crb("sre", "view", viewRef, "corp:sre")},
				RoleBindings: []*rbacv1.RoleBinding{
					rb("team-a", "devs", "deploy", deployRef, "corp:k8s-devs"),
					rb("team-a", "readers", "view", viewRef, "corp:auditors", "corp:k8s-readers"),
					rb("team-b", "devs", "deploy", deployRef, "corp:k8s-devs"),
					rb("team-c", "readers", "view", viewRef, "corp:auditors", "corp:k8s-readers"),
				},
			},
		},
		{
			name:       "a listed namespace that appears later is picked up",
			namespaces: []Namespace{{Name: "team-b"}},
			want: &Objects{
				ClusterRoles:        []*rbacv1.ClusterRole{deployRole},
				ClusterRoleBindings: []*rbacv1.ClusterRoleBinding{crb("sre", "view", viewRef, "corp:sre")},
				RoleBindings:        []*rbacv1.RoleBinding{rb("team-b", "devs", "deploy", deployRef, "corp:k8s-devs")},
			},
		},
	}
	p := mustLoad(t, goodPolicy)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Desired(p, tt.namespaces)
			if err != nil {
				t.Fatalf("Desired: %v", err)
			}
			if !equality.Semantic.DeepEqual(got, tt.want) {
				t.Errorf("Desired differs (-want +got):\n%s", diff.Diff(tt.want, got))
			}
		})
	}
}

func TestDesiredRoleRef(t *testing.T) {
	t.Parallel()
	y := strings.Replace(goodPolicy, "kind: ClusterRole, name: view", "kind: Role, name: reader", 1)
	y = strings.Replace(y, "  role: view\n  clusterWide: true\n", "  role: deploy\n  clusterWide: true\n", 1)
	got, err := Desired(mustLoad(t, y), []Namespace{{Name: "team-x", Labels: map[string]string{"kaccess.io/team": "true"}}})
	if err != nil {
		t.Fatalf("Desired: %v", err)
	}
	ref := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"}
	want := []*rbacv1.RoleBinding{rb("team-x", "readers", "view", ref, "corp:auditors", "corp:k8s-readers")}
	if !equality.Semantic.DeepEqual(got.RoleBindings, want) {
		t.Errorf("RoleBindings differ (-want +got):\n%s", diff.Diff(want, got.RoleBindings))
	}
	if len(got.ClusterRoleBindings) != 1 || got.ClusterRoleBindings[0].RoleRef != deployRef {
		t.Errorf("ClusterRoleBindings = %+v", got.ClusterRoleBindings)
	}
}

func TestDesiredIsAPureFunction(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, goodPolicy)
	ns := []Namespace{{Name: "team-a"}}
	a, _ := Desired(p, ns)
	a.ClusterRoles[0].Rules[0].Verbs[0] = "delete"
	a.RoleBindings[0].Subjects[0].Name = "changed"
	b, _ := Desired(p, ns)
	if b.ClusterRoles[0].Rules[0].Verbs[0] != "get" || b.RoleBindings[0].Subjects[0].Name != "corp:k8s-devs" {
		t.Error("changing Desired's output changed the policy")
	}
}

func TestObjectNameShortened(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 63)
	if got := BindingName("devs", "edit"); got != "kaccess:devs:edit" {
		t.Errorf("BindingName = %q", got)
	}
	n1 := objectName(long, long, long, long)
	n2 := objectName(long, long, long, long+"b")
	if len(n1) != 253 || len(n2) != 253 || n1 == n2 || !strings.HasPrefix(n1, "kaccess:aaa") {
		t.Errorf("shortened names: %q (%d), %q (%d)", n1, len(n1), n2, len(n2))
	}
	if n1 != objectName(long, long, long, long) {
		t.Error("shortened name is not stable")
	}
}
