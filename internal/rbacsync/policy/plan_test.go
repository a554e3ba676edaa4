package policy

import (
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func desiredObjects(t *testing.T, namespaces ...string) []Object {
	t.Helper()
	var ns []Namespace
	for _, n := range namespaces {
		ns = append(ns, Namespace{Name: n, Labels: map[string]string{"kaccess.io/team": "true"}})
	}
	o, err := Desired(mustLoad(t, goodPolicy), ns)
	if err != nil {
		t.Fatalf("Desired: %v", err)
	}
	return o.All()
}

func render(t *testing.T, cs Changes) string {
	t.Helper()
	var b strings.Builder
	if err := cs.Render(&b); err != nil {
		t.Fatalf("Render: %v", err)
	}
	return b.String()
}

func TestPlanNothingWhenEqual(t *testing.T) {
	t.Parallel()
	cs, err := Plan(desiredObjects(t, "team-a"), desiredObjects(t, "team-a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Fatalf("changes for equal input: %+v", cs)
	}
	if got := render(t, cs); got != "No changes: the cluster matches the policy.\n" {
		t.Errorf("Render = %q", got)
	}
}

func TestPlanFromEmptyCluster(t *testing.T) {
	t.Parallel()
	cs, err := Plan(desiredObjects(t, "team-a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `+ create ClusterRole kaccess:deploy
+ create ClusterRoleBinding kaccess:sre:view
+ create RoleBinding team-a/kaccess:devs:deploy
+ create RoleBinding team-a/kaccess:readers:view
Plan: 4 to create, 0 to update, 0 to replace, 0 to delete.
`
	if got := render(t, cs); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestPlanChanges(t *testing.T) {
	t.Parallel()
	desired := desiredObjects(t, "team-a", "team-b")
	current := desiredObjects(t, "team-a", "team-c") // team-c/readers must go, team-b/* must come
	for _, o := range current {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			o.Rules = o.Rules[:0]      // someone emptied the curated role
			o.Labels["extra"] = "kept" // labels kaccess does not set are not compared
		case *rbacv1.ClusterRoleBinding:
			o.RoleRef.Name = "edit" // roleRef is immutable: replace
		case *rbacv1.RoleBinding:
			if o.Namespace == "team-a" && o.Name == "kaccess:readers:view" {
				o.Subjects = append(o.Subjects[:1], rbacv1.Subject{Kind: "Group", APIGroup: rbacv1.GroupName, Name: "corp:x"},
					rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "mallory"})
			}
			if o.Namespace == "team-a" && o.Name == "kaccess:devs:deploy" {
				delete(o.Labels, RoleLabel)
			}
		}
	}
	current = append(current, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess:old:view", Namespace: "team-a", Labels: map[string]string{ManagedByLabel: ManagedByValue}},
	})
	cs, err := Plan(desired, current)
	if err != nil {
		t.Fatal(err)
	}
	want := `~ update ClusterRole kaccess:deploy (rules: 0 -> 1)
-/+ replace ClusterRoleBinding kaccess:sre:view (roleRef changed: ClusterRole/edit -> ClusterRole/view)
~ update RoleBinding team-a/kaccess:devs:deploy (labels changed)
- delete RoleBinding team-a/kaccess:old:view
~ update RoleBinding team-a/kaccess:readers:view (subjects: +corp:k8s-readers -User:mallory -corp:x)
+ create RoleBinding team-b/kaccess:devs:deploy
+ create RoleBinding team-b/kaccess:readers:view
- delete RoleBinding team-c/kaccess:readers:view
Plan: 2 to create, 3 to update, 1 to replace, 2 to delete.
`
	if got := render(t, cs); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// The same inputs in another order render the same plan.
	for i, j := 0, len(current)-1; i < j; i, j = i+1, j-1 {
		current[i], current[j] = current[j], current[i]
	}
	again, err := Plan(desired, current)
	if err != nil {
		t.Fatal(err)
	}
	if got := render(t, again); got != want {
		t.Errorf("order-dependent plan:\n%s", got)
	}
	for _, c := range cs {
		if (c.Desired == nil) != (c.Action == ActionDelete) || (c.Current == nil) != (c.Action == ActionCreate) {
			t.Errorf("%s %s: Desired/Current not set as documented", c.Action, c.Name)
		}
	}
}

func TestPlanRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		desired, current []Object
		want             string
	}{
		{"unsupported type", nil, []Object{&metav1.ObjectMeta{Name: "x"}}, "current[0]: unsupported object type *v1.ObjectMeta"},
		{"duplicate", []Object{&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "a"}}, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "a"}}},
			nil, "desired[1]: duplicate Role a/r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Plan(tt.desired, tt.current)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
