// Package review compares what the access policy grants with what its members used, and
// proposes the narrower policy: for each binding the rights nobody of its groups used in the
// window, and each curated role cut down to the rights that were used. It is pure logic over
// the policy and a summary of the audit record; it never removes a right that was used, and
// where it cannot tell (rules of roles kaccess does not own, non-resource URLs, elevations
// granted on request) it keeps what is there and says so.
package review

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// Usage is one kind of request the audit record shows, with how many there were: allowed
// requests only, since a refused request used no right.
type Usage struct {
	User string
	// Groups are every group the request carried: the user's own and those the gateway
	// impersonated. A binding is used when one of its groups is among them.
	Groups      []string
	Verb        string
	APIGroup    string
	Resource    string // "pods"
	Subresource string // "log"; empty for the resource itself
	Namespace   string // empty for cluster-scoped resources
	// GrantIDs are the access requests whose grants were in force for the request.
	GrantIDs []string
	Count    int64
}

// resource is the resource as RBAC rules name it: "pods" or "pods/log".
func (u Usage) resource() string {
	if u.Subresource == "" {
		return u.Resource
	}
	return u.Resource + "/" + u.Subresource
}

// Input is what a review compares.
type Input struct {
	Policy *policy.Policy // a loaded (valid) policy
	// Namespaces are the cluster's namespaces with their labels, for bindings by selector.
	Namespaces []policy.Namespace
	Usage      []Usage
	// Grants maps the grants of the window (access request names) to their elevations.
	Grants map[string]string
}

// Right is one verb on one resource of one API group ("" is the core group).
type Right struct {
	APIGroup string `json:"apiGroup"`
	Resource string `json:"resource"`
	Verb     string `json:"verb"`
}

func (r Right) String() string {
	g := r.APIGroup
	if g == "" {
		g = "core"
	}
	return r.Verb + " " + g + "/" + r.Resource
}

// Wildcard is a "*" of a rule and what it was used as in the window.
type Wildcard struct {
	Rule  int      `json:"rule"`  // index in the role's rules
	Field string   `json:"field"` // "apiGroups", "resources" or "verbs"
	Seen  []string `json:"seen"`  // the values actually used; empty when nothing was
}

// Binding is the review of one binding of the policy.
type Binding struct {
	Name   string   `json:"name"`
	Role   string   `json:"role"`
	Groups []string `json:"groups"`
	Scope  string   `json:"scope"` // "cluster-wide", "namespaces a, b" or "namespaceSelector k=v"
	// Users are the members who made requests the binding allows.
	Users    []string `json:"users,omitempty"`
	Requests int64    `json:"requests"`
	Used     []Right  `json:"used,omitempty"`
	// Unused are the rights listed in the role's rules that no member used in the binding's
	// scope. Rights of wildcard rules are in Wildcards instead.
	Unused    []Right    `json:"unused,omitempty"`
	Wildcards []Wildcard `json:"wildcards,omitempty"`
	// Remove: no member made any request the binding allows; the proposal drops it.
	Remove bool `json:"remove,omitempty"`
	// Skipped says why the binding was not reviewed (its rules are not in the policy).
	Skipped string `json:"skipped,omitempty"`
}

// Elevation is what the grants of one elevation were used for in the window. Its role is
// kept whole (see Role.Kept); the unused rights are for the people who own the elevation.
type Elevation struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	Scope string `json:"scope"`
	// Grants are the grants of the elevation that requests of the window were made under.
	Grants    []string   `json:"grants,omitempty"`
	Users     []string   `json:"users,omitempty"`
	Requests  int64      `json:"requests"`
	Used      []Right    `json:"used,omitempty"`
	Unused    []Right    `json:"unused,omitempty"`
	Wildcards []Wildcard `json:"wildcards,omitempty"`
	Skipped   string     `json:"skipped,omitempty"`
}

// Role is the proposal for one curated role.
type Role struct {
	Name     string              `json:"name"`
	Rules    []rbacv1.PolicyRule `json:"rules"`
	Proposed []rbacv1.PolicyRule `json:"proposed,omitempty"`
	// Remove: the role is left without bindings and elevations; the proposal drops it.
	Remove bool `json:"remove,omitempty"`
	// Kept says why the role is proposed unchanged although rights went unused.
	Kept string `json:"kept,omitempty"`
}

// Report is the outcome of a review.
type Report struct {
	Bindings   []Binding   `json:"bindings"`
	Elevations []Elevation `json:"elevations"`
	Roles      []Role      `json:"roles"`
	// Proposed is the narrower policy; the input policy is not changed.
	Proposed *policy.Policy `json:"-"`
	// ProposedYAML is Proposed as YAML; Diff a unified diff from the current policy to it.
	ProposedYAML string `json:"proposedPolicy"`
	Diff         string `json:"policyDiff"`
}

// binding-level scope check: does b cover namespace ns?
type scope struct {
	clusterWide bool
	namespaces  map[string]bool
}

func scopeOf(b policy.Binding, namespaces []policy.Namespace) (scope, string, error) {
	switch {
	case b.ClusterWide:
		return scope{clusterWide: true}, "cluster-wide", nil
	case b.NamespaceSelector != nil:
		sel, err := metav1.LabelSelectorAsSelector(b.NamespaceSelector)
		if err != nil {
			return scope{}, "", fmt.Errorf("bindings %q: namespaceSelector: %w", b.Name, err)
		}
		s := scope{namespaces: map[string]bool{}}
		for _, ns := range namespaces {
			if sel.Matches(labels.Set(ns.Labels)) {
				s.namespaces[ns.Name] = true
			}
		}
		return s, "namespaceSelector " + sel.String(), nil
	default:
		s := scope{namespaces: map[string]bool{}}
		for _, ns := range b.Namespaces {
			s.namespaces[ns] = true
		}
		return s, "namespaces " + strings.Join(b.Namespaces, ", "), nil
	}
}

// covers: a RoleBinding grants only namespaced requests in its namespace; a
// ClusterRoleBinding grants everything its role has.
func (s scope) covers(namespace string) bool {
	if s.clusterWide {
		return true
	}
	return namespace != "" && s.namespaces[namespace]
}

// Run reviews in.
func Run(in Input) (*Report, error) {
	p := in.Policy
	if p == nil {
		return nil, fmt.Errorf("review: no policy")
	}
	roles := map[string]*policy.Role{}
	for i := range p.Roles {
		roles[p.Roles[i].Name] = &p.Roles[i]
	}
	elevated := map[string][]string{} // role -> elevations granting it
	for _, e := range p.Elevations {
		elevated[e.Role] = append(elevated[e.Role], e.Name)
	}
	// used[role][rule] is the rights matched by that rule, over every binding of the role.
	used := map[string][]map[Right]bool{}
	rep := &Report{}
	for _, b := range p.Bindings {
		r := roles[b.Role]
		if r == nil {
			return nil, fmt.Errorf("review: binding %q: unknown role %q", b.Name, b.Role)
		}
		sc, desc, err := scopeOf(b, in.Namespaces)
		if err != nil {
			return nil, err
		}
		br := Binding{Name: b.Name, Role: b.Role, Groups: slices.Clone(b.Groups), Scope: desc}
		if r.Ref != nil {
			br.Skipped = fmt.Sprintf("role %q refers to %s %s, whose rules are not in the policy; it is kept as it is", r.Name, r.Ref.Kind, r.Ref.Name)
			rep.Bindings = append(rep.Bindings, br)
			continue
		}
		if used[r.Name] == nil {
			used[r.Name] = newRuleSets(len(r.Rules))
		}
		a := assess(r, sc, func(u Usage) bool { return member(u.Groups, b.Groups) }, in.Usage, used[r.Name])
		br.Users, br.Requests, br.Used, br.Unused, br.Wildcards = a.users, a.requests, a.used, a.unused, a.wildcards
		br.Remove = br.Requests == 0
		rep.Bindings = append(rep.Bindings, br)
	}
	for _, e := range p.Elevations {
		rep.Elevations = append(rep.Elevations, reviewElevation(e, roles[e.Role], in))
	}
	rep.Proposed = propose(p, rep.Bindings, used, elevated, &rep.Roles)
	var err error
	if rep.ProposedYAML, rep.Diff, err = YAMLDiff(p, rep.Proposed); err != nil {
		return nil, err
	}
	return rep, nil
}

// assessment is what one grant of a role (a binding, an elevation) was used for.
type assessment struct {
	users        []string
	requests     int64
	used, unused []Right
	wildcards    []Wildcard
}

func newRuleSets(n int) []map[Right]bool {
	out := make([]map[Right]bool, n)
	for i := range out {
		out[i] = map[Right]bool{}
	}
	return out
}

// assess attributes each request of in that holder made in sc to the first rule of r that
// allows it, adding the rights used to all (the role's, over all its holders).
func assess(r *policy.Role, sc scope, holder func(Usage) bool, in []Usage, all []map[Right]bool) assessment {
	mine := newRuleSets(len(r.Rules))
	users := map[string]bool{}
	var a assessment
	for _, u := range in {
		if !holder(u) || !sc.covers(u.Namespace) {
			continue
		}
		// The first rule that allows the request is the one it used; any rule would do.
		for i := range r.Rules {
			if !matches(&r.Rules[i], u) {
				continue
			}
			rt := Right{APIGroup: u.APIGroup, Resource: u.resource(), Verb: u.Verb}
			mine[i][rt] = true
			if all != nil {
				all[i][rt] = true
			}
			users[u.User] = true
			a.requests += u.Count
			break
		}
	}
	a.users = sortedKeys(users)
	for i := range r.Rules {
		rule := &r.Rules[i]
		a.used = append(a.used, sortedRights(mine[i])...)
		if len(rule.NonResourceURLs) > 0 {
			continue // kept as it is, see proposeRules
		}
		if w := wildcards(i, rule, mine[i]); len(w) > 0 {
			a.wildcards = append(a.wildcards, w...)
			continue
		}
		for _, rt := range listed(rule) {
			if !mine[i][rt] {
				a.unused = append(a.unused, rt)
			}
		}
	}
	sortRights(a.used)
	a.used = slices.Compact(a.used)
	sortRights(a.unused)
	a.unused = slices.Compact(a.unused)
	return a
}

// reviewElevation reports what the grants of e were used for: requests made while one of its
// grants was in force, in its scope.
func reviewElevation(e policy.Elevation, r *policy.Role, in Input) Elevation {
	er := Elevation{Name: e.Name, Role: e.Role, Scope: "cluster-wide"}
	if !e.ClusterWide {
		er.Scope = "namespaces " + strings.Join(e.Namespaces, ", ")
	}
	if r == nil || r.Ref != nil {
		er.Skipped = fmt.Sprintf("role %q is not a curated role of the policy; its rules are not reviewed", e.Role)
		return er
	}
	sc := scope{clusterWide: e.ClusterWide, namespaces: map[string]bool{}}
	for _, ns := range e.Namespaces {
		sc.namespaces[ns] = true
	}
	grants := map[string]bool{}
	ofE := func(u Usage) bool {
		ok := false
		for _, g := range u.GrantIDs {
			if in.Grants[g] == e.Name {
				grants[g], ok = true, true
			}
		}
		return ok
	}
	a := assess(r, sc, ofE, in.Usage, nil)
	er.Grants, er.Users, er.Requests, er.Used, er.Unused, er.Wildcards = sortedKeys(grants), a.users, a.requests, a.used, a.unused, a.wildcards
	return er
}

// propose builds the narrower policy: unused bindings dropped, curated roles cut to what their
// bindings used, roles left without any binding or elevation dropped.
func propose(p *policy.Policy, bindings []Binding, used map[string][]map[Right]bool, elevated map[string][]string, out *[]Role) *policy.Policy {
	np := &policy.Policy{APIVersion: p.APIVersion, Kind: p.Kind, Elevations: p.Elevations}
	referenced := map[string]bool{}
	for i, b := range p.Bindings {
		if bindings[i].Remove {
			continue
		}
		np.Bindings = append(np.Bindings, b)
		referenced[b.Role] = true
	}
	for role := range elevated {
		referenced[role] = true
	}
	for _, r := range p.Roles {
		if r.Ref != nil {
			np.Roles = append(np.Roles, r)
			continue
		}
		rr := Role{Name: r.Name, Rules: r.Rules}
		switch {
		case !referenced[r.Name]:
			rr.Remove = true
		case len(elevated[r.Name]) > 0:
			// An elevation is there for the day it is needed (break-glass): a window without
			// grants says nothing about whether its rights are.
			rr.Kept = "granted by elevation " + strings.Join(elevated[r.Name], ", ") + ": kept whole"
			rr.Proposed = r.Rules
		default:
			rr.Proposed = proposeRules(r.Rules, used[r.Name])
		}
		*out = append(*out, rr)
		if rr.Remove {
			continue
		}
		nr := r
		nr.Rules = rr.Proposed
		np.Roles = append(np.Roles, nr)
	}
	return np
}

// proposeRules rewrites each rule to the rights it was used for: one rule per API group and
// verb set, with the resources used so; resourceNames are kept; non-resource rules are kept
// as they are (requests to URLs such as /healthz carry no resource to compare).
func proposeRules(rules []rbacv1.PolicyRule, used []map[Right]bool) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for i, rule := range rules {
		if len(rule.NonResourceURLs) > 0 {
			out = append(out, *rule.DeepCopy())
			continue
		}
		// (group, resource) -> verbs
		type gr struct{ group, resource string }
		verbs := map[gr][]string{}
		for rt := range used[i] {
			k := gr{rt.APIGroup, rt.Resource}
			verbs[k] = append(verbs[k], rt.Verb)
		}
		// (group, verbs) -> resources
		type gv struct{ group, verbs string }
		merged := map[gv][]string{}
		for k, vs := range verbs {
			sort.Strings(vs)
			key := gv{k.group, strings.Join(vs, ",")}
			merged[key] = append(merged[key], k.resource)
		}
		keys := make([]gv, 0, len(merged))
		for k := range merged {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(a, b int) bool {
			if keys[a].group != keys[b].group {
				return keys[a].group < keys[b].group
			}
			return keys[a].verbs < keys[b].verbs
		})
		for _, k := range keys {
			res := merged[k]
			sort.Strings(res)
			out = append(out, rbacv1.PolicyRule{
				APIGroups: []string{k.group}, Resources: res, Verbs: strings.Split(k.verbs, ","),
				ResourceNames: slices.Clone(rule.ResourceNames),
			})
		}
	}
	return out
}

// matches reports whether rule allows u, as Kubernetes' RBAC authorizer decides it
// (k8s.io/component-helpers/auth/rbac/validation). A rule with resourceNames is taken to
// match: the summary has no object names, and keeping a right is the safe side.
func matches(rule *rbacv1.PolicyRule, u Usage) bool {
	if len(rule.NonResourceURLs) > 0 || u.Resource == "" {
		return false
	}
	return has(rule.Verbs, u.Verb) && has(rule.APIGroups, u.APIGroup) && resourceMatches(rule.Resources, u.resource(), u.Subresource)
}

func has(list []string, v string) bool {
	return slices.Contains(list, rbacv1.VerbAll) || slices.Contains(list, v)
}

func resourceMatches(rules []string, combined, sub string) bool {
	for _, r := range rules {
		switch {
		case r == rbacv1.ResourceAll, r == combined:
			return true
		case sub != "" && r == "*/"+sub:
			return true
		}
	}
	return false
}

// wildcards lists the "*" fields of rule with what they were used as.
func wildcards(i int, rule *rbacv1.PolicyRule, used map[Right]bool) []Wildcard {
	var out []Wildcard
	add := func(field string, list []string, of func(Right) string) {
		if !slices.ContainsFunc(list, func(s string) bool { return s == "*" || strings.HasPrefix(s, "*/") }) {
			return
		}
		seen := map[string]bool{}
		for rt := range used {
			seen[of(rt)] = true
		}
		out = append(out, Wildcard{Rule: i, Field: field, Seen: sortedKeys(seen)})
	}
	add("apiGroups", rule.APIGroups, func(r Right) string { return r.APIGroup })
	add("resources", rule.Resources, func(r Right) string { return r.Resource })
	add("verbs", rule.Verbs, func(r Right) string { return r.Verb })
	return out
}

// listed is every right a rule without wildcards spells out.
func listed(rule *rbacv1.PolicyRule) []Right {
	var out []Right
	for _, g := range rule.APIGroups {
		for _, r := range rule.Resources {
			for _, v := range rule.Verbs {
				out = append(out, Right{APIGroup: g, Resource: r, Verb: v})
			}
		}
	}
	return out
}

func member(have, want []string) bool {
	for _, g := range have {
		if slices.Contains(want, g) {
			return true
		}
	}
	return false
}

func sortedKeys[K ~string](m map[K]bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedRights(m map[Right]bool) []Right {
	out := make([]Right, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	sortRights(out)
	return out
}

func sortRights(rs []Right) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.APIGroup != b.APIGroup {
			return a.APIGroup < b.APIGroup
		}
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		return a.Verb < b.Verb
	})
}
