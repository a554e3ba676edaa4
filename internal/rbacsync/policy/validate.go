package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate returns every problem at once, each as "path: problem" (for example
// "bindings[1].role: unknown role \"deploy\""), joined with errors.Join. Call SetDefaults
// first.
func (p *Policy) Validate() error {
	v := &validator{}
	if p.APIVersion != APIVersion {
		v.bad("apiVersion", "must be %q, got %q", APIVersion, p.APIVersion)
	}
	if p.Kind != Kind {
		v.bad("kind", "must be %q, got %q", Kind, p.Kind)
	}
	roles := map[string]bool{}
	for i, r := range p.Roles {
		path := fmt.Sprintf("roles[%d]", i)
		v.name(path+".name", r.Name, roles)
		v.role(path, r)
	}
	bindings := map[string]bool{}
	for i, b := range p.Bindings {
		path := fmt.Sprintf("bindings[%d]", i)
		v.name(path+".name", b.Name, bindings)
		v.groups(path+".groups", b.Groups)
		ref := v.roleUse(path+".role", p, b.Role)
		scopes := 0
		if len(b.Namespaces) > 0 {
			scopes++
			v.namespaces(path+".namespaces", b.Namespaces)
		}
		if b.NamespaceSelector != nil {
			scopes++
			if _, err := metav1.LabelSelectorAsSelector(b.NamespaceSelector); err != nil {
				v.bad(path+".namespaceSelector", "%v", err)
			}
		}
		if b.ClusterWide {
			scopes++
			if ref != nil && ref.Kind == RefKindRole {
				v.bad(path+".clusterWide", "role %q refers to a namespaced Role, which cannot be bound cluster-wide", b.Role)
			}
		}
		if scopes != 1 {
			v.bad(path, "set exactly one of namespaces, namespaceSelector and clusterWide")
		}
		v.target(path, b.Target)
	}
	elevations := map[string]bool{}
	for i, e := range p.Elevations {
		path := fmt.Sprintf("elevations[%d]", i)
		v.name(path+".name", e.Name, elevations)
		ref := v.roleUse(path+".role", p, e.Role)
		switch {
		case len(e.Namespaces) > 0 && e.ClusterWide:
			v.bad(path, "set only one of namespaces and clusterWide")
		case len(e.Namespaces) > 0:
			v.namespaces(path+".namespaces", e.Namespaces)
		case e.ClusterWide:
			if ref != nil && ref.Kind == RefKindRole {
				v.bad(path+".clusterWide", "role %q refers to a namespaced Role, which cannot be granted cluster-wide", e.Role)
			}
		default:
			v.bad(path, "set one of namespaces and clusterWide")
		}
		v.groups(path+".requesters", e.Requesters)
		v.groups(path+".approvers", e.Approvers)
		if e.Approvals != nil && *e.Approvals < 1 {
			v.bad(path+".approvals", "must be at least 1, got %d", *e.Approvals)
		}
		v.duration(path+".maxDuration", e.MaxDuration)
		v.target(path, e.Target)
	}
	if p.Guardrails != nil {
		v.guardrails(p.Guardrails)
	}
	if v.dropped > 0 {
		v.errs = append(v.errs, fmt.Errorf("%s: and %d more problems", v.lastPath, v.dropped))
	}
	return errors.Join(v.errs...)
}

// maxProblems bounds what Validate reports: a generated file with the same mistake a million
// times gets a readable error, not one of megabytes.
const maxProblems = 100

type validator struct {
	errs     []error
	dropped  int
	lastPath string
}

func (v *validator) bad(path, format string, args ...any) {
	if len(v.errs) >= maxProblems {
		v.dropped++
		v.lastPath = path
		return
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// name checks a policy name: required, a DNS-1123 label (it becomes part of object names and
// label values), unique within seen.
func (v *validator) name(path, name string, seen map[string]bool) {
	if name == "" {
		v.bad(path, "required")
		return
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		v.bad(path, "%q is not a DNS-1123 label: %s", name, strings.Join(msgs, "; "))
		return
	}
	if seen[name] {
		v.bad(path, "duplicate name %q", name)
	}
	seen[name] = true
}

func (v *validator) role(path string, r Role) {
	switch {
	case r.Ref != nil && len(r.Rules) > 0:
		v.bad(path, "set only one of rules and ref")
	case r.Ref != nil:
		switch r.Ref.Kind {
		case RefKindClusterRole, RefKindRole:
		default:
			v.bad(path+".ref.kind", "must be %q or %q, got %q", RefKindClusterRole, RefKindRole, r.Ref.Kind)
		}
		if r.Ref.Name == "" {
			v.bad(path+".ref.name", "required")
		} else if msgs := validation.IsDNS1123Subdomain(strings.ReplaceAll(r.Ref.Name, ":", "-")); len(msgs) > 0 {
			// RBAC names may contain ':' (system:aggregate-to-view); otherwise subdomain rules.
			v.bad(path+".ref.name", "%q is not a valid role name: %s", r.Ref.Name, strings.Join(msgs, "; "))
		}
	case len(r.Rules) == 0:
		v.bad(path, "set one of rules and ref")
	}
	for j, rule := range r.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", path, j)
		if len(rule.Verbs) == 0 {
			v.bad(rp+".verbs", "at least one verb is required")
		}
		switch {
		case len(rule.NonResourceURLs) > 0 && (len(rule.Resources) > 0 || len(rule.APIGroups) > 0):
			v.bad(rp, "a rule has either resources (with apiGroups) or nonResourceURLs, not both")
		case len(rule.NonResourceURLs) == 0 && len(rule.Resources) == 0:
			v.bad(rp+".resources", "at least one resource (or nonResourceURL) is required")
		case len(rule.Resources) > 0 && len(rule.APIGroups) == 0:
			v.bad(rp+".apiGroups", `required with resources; use [""] for the core group`)
		}
	}
}

// roleUse checks that a binding or elevation names a known role and returns its reference
// (nil for curated or unknown roles).
func (v *validator) roleUse(path string, p *Policy, name string) *RoleRef {
	if name == "" {
		v.bad(path, "required")
		return nil
	}
	r := p.role(name)
	if r == nil {
		v.bad(path, "unknown role %q", name)
		return nil
	}
	return r.Ref
}

func (v *validator) groups(path string, groups []string) {
	if len(groups) == 0 {
		v.bad(path, "at least one group is required")
	}
	seen := map[string]bool{}
	for i, g := range groups {
		gp := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case strings.TrimSpace(g) == "":
			v.bad(gp, "empty group name")
		case g != strings.TrimSpace(g):
			v.bad(gp, "%q has leading or trailing spaces", g)
		case seen[g]:
			v.bad(gp, "duplicate group %q", g)
		}
		seen[g] = true
	}
}

func (v *validator) namespaces(path string, namespaces []string) {
	seen := map[string]bool{}
	for i, ns := range namespaces {
		np := fmt.Sprintf("%s[%d]", path, i)
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			v.bad(np, "%q is not a namespace name: %s", ns, strings.Join(msgs, "; "))
		} else if seen[ns] {
			v.bad(np, "duplicate namespace %q", ns)
		}
		seen[ns] = true
	}
}

func (v *validator) duration(path, s string) {
	if s == "" {
		v.bad(path, `required, such as "4h"`)
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.bad(path, "%q is not a duration such as \"4h\"", s)
		return
	}
	limit, _ := time.ParseDuration(MaxElevationDuration)
	switch {
	case d <= 0:
		v.bad(path, "must be positive, got %s", s)
	case d > limit:
		v.bad(path, "%s exceeds the limit of %s", s, MaxElevationDuration)
	}
}

// MaxDurationValue returns the parsed maxDuration of a validated elevation.
func (e Elevation) MaxDurationValue() time.Duration {
	d, _ := time.ParseDuration(e.MaxDuration)
	return d
}
