package rbacsync_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

const syncPolicyV1 = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cm-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
  - name: ns-lister
    rules:
      - apiGroups: [""]
        resources: ["namespaces"]
        verbs: ["list"]
bindings:
  - name: devs
    groups: ["corp:sync-devs"]
    role: cm-reader
    namespaces: ["sync-a", "sync-b", "sync-not-there"]
  - name: everyone
    groups: ["corp:sync-devs"]
    role: ns-lister
    clusterWide: true
`

// Version 2: the role may also create, sync-b and the cluster-wide binding are gone.
const syncPolicyV2 = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cm-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list", "create"]
bindings:
  - name: devs
    groups: ["corp:sync-devs"]
    role: cm-reader
    namespaces: ["sync-a"]
`

func listCM(cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
	return err
}

func createCM(cs kubernetes.Interface, ns, name string) error {
	_, err := cs.CoreV1().ConfigMaps(ns).Create(context.Background(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"}}, metav1.CreateOptions{})
	return err
}

func listNS(cs kubernetes.Interface) error {
	_, err := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	return err
}

func forbidden(err error) error {
	if apierrors.IsForbidden(err) {
		return nil
	}
	return fmt.Errorf("want 403 Forbidden, got %v", err)
}

func actions(cs []policy.Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s %s %s", c.Action, c.Kind, displayName(c.Namespace, c.Name)))
	}
	slices.Sort(out)
	return out
}

func displayName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func TestControllerFollowsThePolicy(t *testing.T) {
	c := testenv.Shared(t)
	cleanManaged(t)
	for _, ns := range []string{"sync-a", "sync-b", "sync-c"} {
		c.MustNamespace(t, ns)
	}
	v1 := mustPolicy(t, syncPolicyV1)
	ctrl, rec := newController(t, gatewayClient(t), v1)
	start(t, ctrl.Run)
	converged(t, v1)

	wantCreates := []string{
		"create ClusterRole kaccess:cm-reader",
		"create ClusterRole kaccess:ns-lister",
		"create ClusterRoleBinding kaccess:everyone:ns-lister",
		"create RoleBinding sync-a/kaccess:devs:cm-reader",
		"create RoleBinding sync-b/kaccess:devs:cm-reader",
	}
	if got := actions(rec.all()); !slices.Equal(got, wantCreates) {
		t.Fatalf("OnChange saw\n%v\nwant\n%v", got, wantCreates)
	}

	dana := asUser(t, "dana", "corp:sync-devs")
	eventually(t, repairDeadline, "dana lists configmaps in sync-a", func() error { return listCM(dana, "sync-a") })
	eventually(t, repairDeadline, "dana lists configmaps in sync-b", func() error { return listCM(dana, "sync-b") })
	eventually(t, repairDeadline, "dana lists namespaces", func() error { return listNS(dana) })
	if err := forbidden(listCM(dana, "sync-c")); err != nil {
		t.Errorf("dana in sync-c: %v", err)
	}
	if err := forbidden(createCM(dana, "sync-a", "by-dana")); err != nil {
		t.Errorf("dana creates a configmap in sync-a: %v", err)
	}
	if err := forbidden(listCM(asUser(t, "erin", "corp:others"), "sync-a")); err != nil {
		t.Errorf("erin, not in the group: %v", err)
	}

	// The policy changes: the cluster follows, pruned objects are gone.
	before := rec.count()
	v2 := mustPolicy(t, syncPolicyV2)
	if err := ctrl.SetPolicy(v2); err != nil {
		t.Fatal(err)
	}
	converged(t, v2)
	wantV2 := []string{
		"delete ClusterRole kaccess:ns-lister",
		"delete ClusterRoleBinding kaccess:everyone:ns-lister",
		"delete RoleBinding sync-b/kaccess:devs:cm-reader",
		"update ClusterRole kaccess:cm-reader",
	}
	if got := actions(rec.all()[before:]); !slices.Equal(got, wantV2) {
		t.Fatalf("OnChange saw\n%v\nwant\n%v", got, wantV2)
	}
	eventually(t, repairDeadline, "dana creates a configmap in sync-a", func() error { return createCM(dana, "sync-a", "by-dana") })
	eventually(t, repairDeadline, "dana refused in sync-b", func() error { return forbidden(listCM(dana, "sync-b")) })
	eventually(t, repairDeadline, "dana refused namespaces", func() error { return forbidden(listNS(dana)) })
	admin := c.AdminClient().RbacV1()
	if _, err := admin.ClusterRoles().Get(context.Background(), "kaccess:ns-lister", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pruned ClusterRole: %v", err)
	}
	if _, err := getRB(t, "sync-b", "kaccess:devs:cm-reader"); !apierrors.IsNotFound(err) {
		t.Errorf("pruned RoleBinding: %v", err)
	}
}

const driftPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cm-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
bindings:
  - name: team
    groups: ["corp:drift-team"]
    role: cm-reader
    namespaces: ["drift-a", "drift-conflict"]
`

func TestControllerRepairsDriftAndLeavesOthersAlone(t *testing.T) {
	c := testenv.Shared(t)
	cleanManaged(t)
	c.MustNamespace(t, "drift-a")
	c.MustNamespace(t, "drift-conflict")
	ctx := context.Background()
	rbac := c.AdminClient().RbacV1()
	const name = "kaccess:team:cm-reader"
	unmanaged := func(ns, name string) *rbacv1.RoleBinding {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects: []rbacv1.Subject{testenv.User("bob")}}
	}
	// Unmanaged: one with a similar name next to the managed one, one with the very name the
	// policy wants in drift-conflict. Neither may change.
	var untouched []*rbacv1.RoleBinding
	for _, rb := range []*rbacv1.RoleBinding{unmanaged("drift-a", name+"-copy"), unmanaged("drift-conflict", name)} {
		got, err := rbac.RoleBindings(rb.Namespace).Create(ctx, rb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		untouched = append(untouched, got)
		t.Cleanup(func() {
			if err := rbac.RoleBindings(rb.Namespace).Delete(ctx, rb.Name, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		})
	}

	ctrl, _ := newController(t, gatewayClient(t), mustPolicy(t, driftPolicy))
	start(t, ctrl.Run)
	wantSubjects := []rbacv1.Subject{testenv.Group("corp:drift-team")}
	repaired := func(what string, edit func() error) {
		t.Helper()
		if err := edit(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		began := time.Now()
		eventually(t, repairDeadline, what+" repaired", func() error {
			rb, err := getRB(t, "drift-a", name)
			if err != nil {
				return err
			}
			if !slices.Equal(rb.Subjects, wantSubjects) || rb.Labels[policy.RoleLabel] != "cm-reader" {
				return fmt.Errorf("subjects %v labels %v", rb.Subjects, rb.Labels)
			}
			_, err = rbac.ClusterRoles().Get(ctx, "kaccess:cm-reader", metav1.GetOptions{})
			return err
		})
		t.Logf("%s repaired in %s", what, time.Since(began).Round(time.Millisecond))
	}
	repaired("first sync", func() error { return nil })

	repaired("hand-edited subjects", func() error {
		rb, err := getRB(t, "drift-a", name)
		if err != nil {
			return err
		}
		rb.Subjects = []rbacv1.Subject{testenv.User("mallory")}
		_, err = rbac.RoleBindings("drift-a").Update(ctx, rb, metav1.UpdateOptions{})
		return err
	})
	repaired("deleted ClusterRole", func() error {
		return rbac.ClusterRoles().Delete(ctx, "kaccess:cm-reader", metav1.DeleteOptions{})
	})
	repaired("deleted RoleBinding", func() error {
		return rbac.RoleBindings("drift-a").Delete(ctx, name, metav1.DeleteOptions{})
	})
	repaired("removed policy-role label", func() error {
		rb, err := getRB(t, "drift-a", name)
		if err != nil {
			return err
		}
		delete(rb.Labels, policy.RoleLabel)
		rb.Subjects = append(rb.Subjects, testenv.User("mallory"))
		_, err = rbac.RoleBindings("drift-a").Update(ctx, rb, metav1.UpdateOptions{})
		return err
	})

	// A full pass more, then the unmanaged objects must be exactly as created.
	if _, err := ctrl.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	wantConflicts := []string{"RoleBinding drift-conflict/" + name}
	if got := ctrl.Status().Conflicts; !slices.Equal(got, wantConflicts) {
		t.Errorf("Status().Conflicts = %v, want %v", got, wantConflicts)
	}
	for _, want := range untouched {
		got, err := getRB(t, want.Namespace, want.Name)
		if err != nil {
			t.Fatalf("unmanaged RoleBinding %s/%s: %v", want.Namespace, want.Name, err)
		}
		if got.ResourceVersion != want.ResourceVersion || got.RoleRef.Name != "view" {
			t.Errorf("unmanaged RoleBinding %s/%s was changed: %+v", want.Namespace, want.Name, got)
		}
	}
}

const selectorPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cm-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
bindings:
  - name: blue
    groups: ["corp:blue"]
    role: cm-reader
    namespaceSelector:
      matchLabels:
        kaccess-test/team: blue
  - name: listed
    groups: ["corp:listed"]
    role: cm-reader
    namespaces: ["later-listed"]
`

func TestControllerFollowsNewNamespaces(t *testing.T) {
	cleanManaged(t)
	// A matching namespace being deleted (forever, without a controller-manager) takes no
	// binding, and does not fail the passes either.
	labelledNamespace(t, "later-terminating", map[string]string{"kaccess-test/team": "blue"})
	if err := testenv.Shared(t).AdminClient().CoreV1().Namespaces().Delete(context.Background(), "later-terminating", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ctrl, _ := newController(t, gatewayClient(t), mustPolicy(t, selectorPolicy))
	start(t, ctrl.Run)
	eventually(t, 20*time.Second, "first pass", func() error {
		if ctrl.Status().LastSuccess.IsZero() {
			return errors.New("no successful pass yet")
		}
		return nil
	})

	labelledNamespace(t, "later-red", map[string]string{"kaccess-test/team": "red"})
	labelledNamespace(t, "later-blue", map[string]string{"kaccess-test/team": "blue"})
	testenv.Shared(t).MustNamespace(t, "later-listed")
	eventually(t, repairDeadline, "binding in later-blue", func() error {
		_, err := getRB(t, "later-blue", "kaccess:blue:cm-reader")
		return err
	})
	eventually(t, repairDeadline, "binding in later-listed", func() error {
		_, err := getRB(t, "later-listed", "kaccess:listed:cm-reader")
		return err
	})
	eventually(t, repairDeadline, "corp:blue reads in later-blue", func() error {
		return listCM(asUser(t, "frank", "corp:blue"), "later-blue")
	})
	if _, err := getRB(t, "later-red", "kaccess:blue:cm-reader"); !apierrors.IsNotFound(err) {
		t.Errorf("binding in a namespace the selector does not match: %v", err)
	}
	if _, err := ctrl.Sync(context.Background()); err != nil {
		t.Errorf("Sync with a terminating namespace: %v", err)
	}
	if _, err := getRB(t, "later-terminating", "kaccess:blue:cm-reader"); !apierrors.IsNotFound(err) {
		t.Errorf("binding in a terminating namespace: %v", err)
	}
}

const refPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: app
    ref: {kind: ClusterRole, name: %s}
bindings:
  - name: swap
    groups: ["corp:swap"]
    role: app
    namespaces: ["swap-a"]
`

func TestControllerReplacesBindingWhenRoleRefChanges(t *testing.T) {
	c := testenv.Shared(t)
	cleanManaged(t)
	c.MustNamespace(t, "swap-a")
	read := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}}
	write := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}}
	c.MustGrantRole(t, "", "swap-one", read, testenv.User("nobody-one"))
	c.MustGrantRole(t, "", "swap-two", write, testenv.User("nobody-two"))

	one := mustPolicy(t, fmt.Sprintf(refPolicy, "swap-one"))
	ctrl, rec := newController(t, gatewayClient(t), one)
	start(t, ctrl.Run)
	converged(t, one)
	const name = "kaccess:swap:app"
	first, err := getRB(t, "swap-a", name)
	if err != nil {
		t.Fatal(err)
	}
	before := rec.count()
	two := mustPolicy(t, fmt.Sprintf(refPolicy, "swap-two"))
	if err := ctrl.SetPolicy(two); err != nil {
		t.Fatal(err)
	}
	converged(t, two)
	second, err := getRB(t, "swap-a", name)
	if err != nil {
		t.Fatal(err)
	}
	if second.UID == first.UID || second.RoleRef.Name != "swap-two" {
		t.Errorf("binding not replaced: uid %s -> %s, roleRef %s", first.UID, second.UID, second.RoleRef.Name)
	}
	want := []string{"replace RoleBinding swap-a/" + name}
	if got := actions(rec.all()[before:]); !slices.Equal(got, want) {
		t.Errorf("OnChange saw %v, want %v", got, want)
	}
	swapper := asUser(t, "gina", "corp:swap")
	eventually(t, repairDeadline, "corp:swap creates", func() error { return createCM(swapper, "swap-a", "by-gina") })
	eventually(t, repairDeadline, "corp:swap no longer lists", func() error { return forbidden(listCM(swapper, "swap-a")) })
}

const prunePolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: cm-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
bindings:
  - name: keep
    groups: ["corp:keep"]
    role: cm-reader
    namespaces: ["noprune-a"]
  - name: keep-all
    groups: ["corp:keep"]
    role: cm-reader
    clusterWide: true
`

// A policy that keeps nothing: applied by a controller that can read the cluster, it prunes
// every managed object.
const emptyPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
`

func TestControllerNeverPrunesWhenItCannotRead(t *testing.T) {
	c := testenv.Shared(t)
	cleanManaged(t)
	c.MustNamespace(t, "noprune-a")
	ctx := context.Background()
	keep := mustPolicy(t, prunePolicy)
	setup, _ := newController(t, gatewayClient(t), keep)
	if _, err := setup.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	converged(t, keep)
	snapshot := func() map[string]string {
		s, err := rbacsync.ReadState(ctx, c.AdminClient())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, o := range s.Managed {
			m[displayName(o.GetNamespace(), o.GetName())] = string(o.GetUID())
		}
		return m
	}
	want := snapshot()
	if len(want) != 3 {
		t.Fatalf("managed objects after setup: %v", want)
	}

	// May write RBAC objects but not list namespaces: an implementation that took the
	// refused list for "no namespaces" would delete the RoleBinding.
	c.MustGrantRole(t, "", "rbacsync-half-blind", []rbacv1.PolicyRule{{
		APIGroups: []string{rbacv1.GroupName}, Resources: []string{"*"}, Verbs: []string{"*"},
	}}, testenv.User("half-blind"))
	halfBlind := c.AdminConfig()
	halfBlind.Impersonate.UserName = "half-blind"
	unreachable := c.GatewayConfig()
	unreachable.Host = "https://127.0.0.1:1" // nothing listens on port 1

	for _, tt := range []struct {
		name   string
		client kubernetes.Interface
	}{
		{"namespaces not listable", clientFor(t, halfBlind)},
		{"API server unreachable", clientFor(t, unreachable)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctrl, rec := newController(t, tt.client, mustPolicy(t, emptyPolicy))
			stop := start(t, ctrl.Run)
			eventually(t, 20*time.Second, "three failed passes", func() error {
				if st := ctrl.Status(); st.Failures < 3 {
					return fmt.Errorf("status %+v", st)
				}
				return nil
			})
			stop()
			if got := snapshot(); !maps.Equal(got, want) {
				t.Errorf("managed objects changed:\n got %v\nwant %v", got, want)
			}
			if n := rec.count(); n != 0 {
				t.Errorf("OnChange fired %d times: %v", n, actions(rec.all()))
			}
		})
	}

	// The same empty policy with a working client prunes them all: the test above is real.
	pruner, rec := newController(t, gatewayClient(t), mustPolicy(t, emptyPolicy))
	if _, err := pruner.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(); len(got) != 0 || rec.count() != 3 {
		t.Errorf("after pruning: %v, %d changes", got, rec.count())
	}
}
