package review

import (
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

const fixture = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: deploy
  rules:
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get", "list", "watch", "update", "patch"]
  - apiGroups: [""]
    resources: ["pods", "pods/log"]
    verbs: ["get", "list"]
- name: ops
  rules:
  - apiGroups: [""]
    resources: ["*"]
    verbs: ["*"]
- name: reader
  rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list"]
- name: viewer
  ref: {kind: ClusterRole, name: view}
- name: admin
  rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
bindings:
- name: devs
  groups: ["corp:devs"]
  role: deploy
  namespaces: ["team-a"]
- name: idle
  groups: ["corp:nobody"]
  role: deploy
  namespaces: ["team-b"]
- name: sre
  groups: ["corp:sre"]
  role: ops
  clusterWide: true
- name: readers
  groups: ["corp:readers"]
  role: reader
  namespaceSelector:
    matchLabels: {team: "true"}
- name: viewers
  groups: ["corp:devs"]
  role: viewer
  namespaces: ["team-a"]
elevations:
- name: break-glass
  role: admin
  clusterWide: true
  requesters: ["corp:sre"]
  approvers: ["corp:leads"]
  maxDuration: 1h
`

var namespaces = []policy.Namespace{
	{Name: "team-a"}, {Name: "team-b"}, {Name: "team-c", Labels: map[string]string{"team": "true"}}, {Name: "team-d"},
}

func usage() []Usage {
	dev := []string{"corp:devs", "system:authenticated"}
	return []Usage{
		{User: "alice", Groups: dev, Verb: "get", APIGroup: "apps", Resource: "deployments", Namespace: "team-a", Count: 3},
		{User: "alice", Groups: dev, Verb: "list", Resource: "pods", Namespace: "team-a", Count: 2},
		{User: "alice", Groups: dev, Verb: "get", Resource: "pods", Subresource: "log", Namespace: "team-a", Count: 1},
		// Outside the binding's namespaces: uses nothing of devs (nor of idle: alice is no member).
		{User: "alice", Groups: dev, Verb: "update", APIGroup: "apps", Resource: "deployments", Namespace: "team-b", Count: 1},
		{User: "bob", Groups: []string{"corp:sre"}, Verb: "get", Resource: "nodes", Count: 4},
		{User: "bob", Groups: []string{"corp:sre"}, Verb: "delete", Resource: "pods", Namespace: "kube-system", Count: 1},
		{User: "carol", Groups: []string{"corp:readers"}, Verb: "get", Resource: "configmaps", Namespace: "team-c", Count: 5},
		// team-d is not selected, and a list across namespaces is cluster-scoped: neither is the binding's.
		{User: "carol", Groups: []string{"corp:readers"}, Verb: "list", Resource: "configmaps", Namespace: "team-d", Count: 1},
		{User: "carol", Groups: []string{"corp:readers"}, Verb: "list", Resource: "configmaps", Count: 1},
		// Under a grant of break-glass (and one of another elevation, which is not break-glass').
		{User: "dora", Groups: []string{"corp:oncall", "kaccess:grant:bg-1"}, GrantIDs: []string{"bg-1", "other-1"}, Verb: "get", Resource: "secrets", Namespace: "kube-system", Count: 2},
		{User: "dora", Groups: []string{"corp:oncall"}, GrantIDs: []string{"other-1"}, Verb: "delete", Resource: "secrets", Namespace: "kube-system", Count: 1},
	}
}

func run(t *testing.T) (*policy.Policy, *Report) {
	t.Helper()
	p, err := policy.Load([]byte(fixture))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(Input{Policy: p, Namespaces: namespaces, Usage: usage(), Grants: map[string]string{"bg-1": "break-glass", "other-1": "other"}})
	if err != nil {
		t.Fatal(err)
	}
	return p, rep
}

func binding(t *testing.T, rep *Report, name string) Binding {
	t.Helper()
	for _, b := range rep.Bindings {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no binding %q in the report", name)
	return Binding{}
}

func role(t *testing.T, p *policy.Policy, name string) *policy.Role {
	t.Helper()
	for i := range p.Roles {
		if p.Roles[i].Name == name {
			return &p.Roles[i]
		}
	}
	return nil
}

func rights(specs ...string) []Right {
	var out []Right
	for _, s := range specs {
		f := strings.Fields(s) // "verb group resource"
		g := f[1]
		if g == "core" {
			g = ""
		}
		out = append(out, Right{Verb: f[0], APIGroup: g, Resource: f[2]})
	}
	sortRights(out)
	return out
}

func TestUnusedRightsOfANamespacedBinding(t *testing.T) {
	t.Parallel()
	_, rep := run(t)
	b := binding(t, rep, "devs")
	if want := rights("get apps deployments", "list core pods", "get core pods/log"); !slices.Equal(b.Used, want) {
		t.Errorf("used = %v, want %v", b.Used, want)
	}
	want := rights("list apps deployments", "watch apps deployments", "update apps deployments", "patch apps deployments",
		"get core pods", "list core pods/log")
	if !slices.Equal(b.Unused, want) {
		t.Errorf("unused = %v, want %v", b.Unused, want)
	}
	if b.Requests != 6 || !slices.Equal(b.Users, []string{"alice"}) || b.Remove {
		t.Errorf("requests %d users %v remove %v", b.Requests, b.Users, b.Remove)
	}
}

func TestProposedRoleKeepsExactlyWhatWasUsed(t *testing.T) {
	t.Parallel()
	_, rep := run(t)
	got := role(t, rep.Proposed, "deploy").Rules
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
	}
	if !rulesEqual(got, want) {
		t.Errorf("proposed deploy = %+v, want %+v", got, want)
	}
}

func TestWildcardsAreExpandedToWhatWasSeen(t *testing.T) {
	t.Parallel()
	_, rep := run(t)
	b := binding(t, rep, "sre")
	wantW := []Wildcard{{Rule: 0, Field: "resources", Seen: []string{"nodes", "pods"}}, {Rule: 0, Field: "verbs", Seen: []string{"delete", "get"}}}
	if len(b.Wildcards) != 2 || !wildcardEqual(b.Wildcards[0], wantW[0]) || !wildcardEqual(b.Wildcards[1], wantW[1]) {
		t.Errorf("wildcards = %+v, want %+v", b.Wildcards, wantW)
	}
	if len(b.Unused) != 0 {
		t.Errorf("a wildcard rule has no enumerable unused rights, got %v", b.Unused)
	}
	got := role(t, rep.Proposed, "ops").Rules
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"delete"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
	}
	if !rulesEqual(got, want) {
		t.Errorf("proposed ops = %+v, want %+v", got, want)
	}
}

func TestSelectorBindingCountsOnlySelectedNamespaces(t *testing.T) {
	t.Parallel()
	_, rep := run(t)
	b := binding(t, rep, "readers")
	if !slices.Equal(b.Used, rights("get core configmaps")) || !slices.Equal(b.Unused, rights("list core configmaps")) {
		t.Errorf("used %v unused %v", b.Used, b.Unused)
	}
	if b.Requests != 5 {
		t.Errorf("requests = %d, want 5 (team-c only)", b.Requests)
	}
}

func TestBindingOfAGroupWithoutRequestsIsProposedForRemoval(t *testing.T) {
	t.Parallel()
	p, rep := run(t)
	b := binding(t, rep, "idle")
	if !b.Remove || b.Requests != 0 || len(b.Used) != 0 || len(b.Unused) != 9 {
		t.Errorf("idle = %+v", b)
	}
	for _, pb := range rep.Proposed.Bindings {
		if pb.Name == "idle" {
			t.Error("the proposal still has binding idle")
		}
	}
	if len(rep.Proposed.Bindings) != len(p.Bindings)-1 {
		t.Errorf("proposal has %d bindings, want %d", len(rep.Proposed.Bindings), len(p.Bindings)-1)
	}
}

func TestUnreviewableRolesAreKept(t *testing.T) {
	t.Parallel()
	p, rep := run(t)
	if b := binding(t, rep, "viewers"); b.Skipped == "" || b.Remove {
		t.Errorf("a binding of a referenced role must be skipped and kept: %+v", b)
	}
	if got, want := role(t, rep.Proposed, "admin").Rules, role(t, p, "admin").Rules; !rulesEqual(got, want) {
		t.Errorf("the elevation's role changed: %+v", got)
	}
	if role(t, rep.Proposed, "viewer") == nil {
		t.Error("the referenced role was dropped")
	}
}

func TestRoleWithoutUseIsDropped(t *testing.T) {
	t.Parallel()
	p, err := policy.Load([]byte(fixture))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(Input{Policy: p, Namespaces: namespaces}) // nobody made any request
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"deploy", "ops", "reader"} {
		if role(t, rep.Proposed, name) != nil {
			t.Errorf("role %s has no use and no binding left, but is still proposed", name)
		}
	}
	if role(t, rep.Proposed, "admin") == nil || role(t, rep.Proposed, "viewer") == nil {
		t.Error("the elevation's role and the referenced role must stay")
	}
}

// TestNothingUsedIsRemoved: every request a binding allowed is still allowed by the proposal.
func TestNothingUsedIsRemoved(t *testing.T) {
	t.Parallel()
	p, rep := run(t)
	for _, u := range usage() {
		if allowedBy(t, p, u) && !allowedBy(t, rep.Proposed, u) {
			t.Errorf("%s %s/%s in %q by %s was allowed and no longer is", u.Verb, u.Resource, u.Subresource, u.Namespace, u.User)
		}
	}
	// And the proposal is itself a valid policy.
	y, diff, err := YAMLDiff(p, rep.Proposed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load([]byte(y)); err != nil {
		t.Errorf("the proposed policy does not load: %v", err)
	}
	for _, want := range []string{"--- policy (current)", "+++ policy (proposed)", "-  name: idle", "-    - watch"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
}

// allowedBy evaluates u against every binding of p.
func allowedBy(t *testing.T, p *policy.Policy, u Usage) bool {
	for _, b := range p.Bindings {
		r := role(t, p, b.Role)
		sc, _, err := scopeOf(b, namespaces)
		if err != nil {
			t.Fatal(err)
		}
		if r.Ref != nil || !member(u.Groups, b.Groups) || !sc.covers(u.Namespace) {
			continue
		}
		for i := range r.Rules {
			if matches(&r.Rules[i], u) {
				return true
			}
		}
	}
	return false
}

func TestResourceMatching(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rules    []string
		res, sub string
		want     bool
	}{
		{[]string{"pods"}, "pods", "", true},
		{[]string{"pods"}, "pods", "log", false},
		{[]string{"pods/log"}, "pods", "log", true},
		{[]string{"pods/log"}, "pods", "", false},
		{[]string{"*/log"}, "pods", "log", true},
		{[]string{"*/log"}, "pods", "exec", false},
		{[]string{"*"}, "pods", "exec", true},
	} {
		u := Usage{Resource: tc.res, Subresource: tc.sub}
		if got := resourceMatches(tc.rules, u.resource(), tc.sub); got != tc.want {
			t.Errorf("%v vs %s/%s = %v, want %v", tc.rules, tc.res, tc.sub, got, tc.want)
		}
	}
}

func rulesEqual(a, b []rbacv1.PolicyRule) bool {
	return slices.EqualFunc(a, b, func(x, y rbacv1.PolicyRule) bool {
		return slices.Equal(x.APIGroups, y.APIGroups) && slices.Equal(x.Resources, y.Resources) &&
			slices.Equal(x.Verbs, y.Verbs) && slices.Equal(x.ResourceNames, y.ResourceNames) &&
			slices.Equal(x.NonResourceURLs, y.NonResourceURLs)
	})
}

func wildcardEqual(a, b Wildcard) bool {
	return a.Rule == b.Rule && a.Field == b.Field && slices.Equal(a.Seen, b.Seen)
}

func TestElevationUseUnderItsGrants(t *testing.T) {
	t.Parallel()
	p, rep := run(t)
	if len(rep.Elevations) != 1 {
		t.Fatalf("elevations %+v", rep.Elevations)
	}
	e := rep.Elevations[0]
	if e.Name != "break-glass" || !slices.Equal(e.Grants, []string{"bg-1"}) || !slices.Equal(e.Users, []string{"dora"}) || e.Requests != 2 {
		t.Errorf("break-glass = %+v", e)
	}
	if !slices.Equal(e.Used, rights("get core secrets")) {
		t.Errorf("used under the grant %v, want only what was done under bg-1", e.Used)
	}
	want := []Wildcard{{Field: "apiGroups", Seen: []string{""}}, {Field: "resources", Seen: []string{"secrets"}}, {Field: "verbs", Seen: []string{"get"}}}
	if !slices.EqualFunc(e.Wildcards, want, wildcardEqual) {
		t.Errorf("wildcards %+v, want %+v", e.Wildcards, want)
	}
	// The elevation's role stays whole whatever its grants were used for.
	if got := role(t, rep.Proposed, "admin").Rules; !rulesEqual(got, role(t, p, "admin").Rules) {
		t.Errorf("admin proposed as %+v", got)
	}
	// Without grants in the window the elevation has no use, and its role still stays.
	rep2, err := Run(Input{Policy: p, Namespaces: namespaces, Usage: usage()})
	if err != nil {
		t.Fatal(err)
	}
	if e := rep2.Elevations[0]; e.Requests != 0 || len(e.Grants) != 0 || role(t, rep2.Proposed, "admin") == nil {
		t.Errorf("no grants: %+v", e)
	}
}
