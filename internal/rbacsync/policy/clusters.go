package policy

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Cluster is what targeting knows about a cluster behind the gateway: its name and the labels
// the gateway's config gives it (clusters[].labels).
type Cluster struct {
	Name   string
	Labels map[string]string
}

// Target picks the clusters a binding, elevation or guardrail applies to: those named in
// Clusters and those whose labels ClusterSelector matches (either suffices). Neither set means
// every cluster.
type Target struct {
	Clusters        []string              `json:"clusters,omitempty"`
	ClusterSelector *metav1.LabelSelector `json:"clusterSelector,omitempty"`
}

// Everywhere reports whether t sets no target, so it applies to every cluster.
func (t Target) Everywhere() bool { return len(t.Clusters) == 0 && t.ClusterSelector == nil }

// Matches reports whether t applies to c. A selector that does not parse matches nothing (a
// validated policy has none): fail closed rather than everywhere.
func (t Target) Matches(c Cluster) bool {
	if t.Everywhere() || slices.Contains(t.Clusters, c.Name) {
		return true
	}
	if t.ClusterSelector == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(t.ClusterSelector)
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(c.Labels))
}

// Select returns the names of the clusters t applies to, in the order given.
func (t Target) Select(clusters []Cluster) []string {
	var out []string
	for _, c := range clusters {
		if t.Matches(c) {
			out = append(out, c.Name)
		}
	}
	return out
}

// target checks a Target's syntax. Unknown cluster names are not errors here: one policy
// file is shared by gateways with different clusters (see UnknownClusters).
func (v *validator) target(path string, t Target) {
	seen := map[string]bool{}
	for i, n := range t.Clusters {
		cp := fmt.Sprintf("%s.clusters[%d]", path, i)
		if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
			v.bad(cp, "%q is not a cluster name: %s", n, strings.Join(msgs, "; "))
		} else if seen[n] {
			v.bad(cp, "duplicate cluster %q", n)
		}
		seen[n] = true
	}
	if t.ClusterSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(t.ClusterSelector); err != nil {
			v.bad(path+".clusterSelector", "%v", err)
		}
	}
}

// UnknownClusters returns a warning per cluster name the policy targets that is not among
// clusters, each with its field path ("bindings[2].clusters[0]: no cluster named \"stage\" behind this
// gateway"). A shared policy may name clusters other gateways front, so these are warnings.
func (p *Policy) UnknownClusters(clusters []Cluster) []string {
	known := map[string]bool{}
	for _, c := range clusters {
		known[c.Name] = true
	}
	var out []string
	check := func(path string, t Target) {
		for i, n := range t.Clusters {
			if !known[n] {
				out = append(out, fmt.Sprintf("%s.clusters[%d]: no cluster named %q behind this gateway; the entry does not apply here", path, i, n))
			}
		}
	}
	p.eachTarget(func(path string, t Target) { check(path, t) })
	return out
}

// eachTarget calls f with the path and Target of every targetable entry.
func (p *Policy) eachTarget(f func(path string, t Target)) {
	for i, b := range p.Bindings {
		f(fmt.Sprintf("bindings[%d]", i), b.Target)
	}
	for i, e := range p.Elevations {
		f(fmt.Sprintf("elevations[%d]", i), e.Target)
	}
	if g := p.Guardrails; g != nil {
		for i, r := range g.Images {
			f(fmt.Sprintf("guardrails.images[%d]", i), r.Target)
		}
		for i, r := range g.Resources {
			f(fmt.Sprintf("guardrails.resources[%d]", i), r.Target)
		}
		for i, r := range g.HostAccess {
			f(fmt.Sprintf("guardrails.hostAccess[%d]", i), r.Target)
		}
		for i, r := range g.CEL {
			f(fmt.Sprintf("guardrails.cel[%d]", i), r.Target)
		}
		for i, r := range g.PodSecurity {
			f(fmt.Sprintf("guardrails.podSecurity[%d]", i), r.Target)
		}
		for i, r := range g.NetworkPolicies {
			f(fmt.Sprintf("guardrails.networkPolicies[%d]", i), r.Target)
		}
	}
}

// ForCluster returns the policy as it applies to cluster c: every role (curated roles are
// made on every cluster, so references to them hold anywhere), and only the bindings,
// elevations and guardrails that target c. Exemptions keep the guardrails still there and are
// dropped when none is. The result is valid when p is; p is not changed. A new list of
// guardrails must be added here (and to eachTarget), or it would be synced nowhere.
func (p *Policy) ForCluster(c Cluster) *Policy {
	out := &Policy{APIVersion: p.APIVersion, Kind: p.Kind, Roles: p.Roles}
	for _, b := range p.Bindings {
		if b.Target.Matches(c) {
			out.Bindings = append(out.Bindings, b)
		}
	}
	for _, e := range p.Elevations {
		if e.Target.Matches(c) {
			out.Elevations = append(out.Elevations, e)
		}
	}
	if g := p.Guardrails; g != nil {
		og := &Guardrails{
			Images:          keep(g.Images, func(r ImageGuardrail) Target { return r.Target }, c),
			Resources:       keep(g.Resources, func(r ResourceGuardrail) Target { return r.Target }, c),
			HostAccess:      keep(g.HostAccess, func(r HostAccessGuardrail) Target { return r.Target }, c),
			CEL:             keep(g.CEL, func(r CELGuardrail) Target { return r.Target }, c),
			PodSecurity:     keep(g.PodSecurity, func(r PodSecurityGuardrail) Target { return r.Target }, c),
			NetworkPolicies: keep(g.NetworkPolicies, func(r NetworkGuardrail) Target { return r.Target }, c),
		}
		names := map[string]bool{}
		for _, r := range og.Images {
			names[r.Name] = true
		}
		for _, r := range og.Resources {
			names[r.Name] = true
		}
		for _, r := range og.HostAccess {
			names[r.Name] = true
		}
		for _, r := range og.CEL {
			names[r.Name] = true
		}
		for _, r := range og.PodSecurity {
			names[r.Name] = true
		}
		for _, e := range g.Exemptions {
			kept := slices.DeleteFunc(slices.Clone(e.Guardrails), func(n string) bool { return !names[n] })
			if len(kept) > 0 {
				e.Guardrails = kept
				og.Exemptions = append(og.Exemptions, e)
			}
		}
		if len(og.Images)+len(og.Resources)+len(og.HostAccess)+len(og.CEL)+len(og.PodSecurity)+len(og.NetworkPolicies) > 0 {
			out.Guardrails = og
		}
	}
	return out
}

func keep[T any](in []T, target func(T) Target, c Cluster) []T {
	var out []T
	for _, x := range in {
		if target(x).Matches(c) {
			out = append(out, x)
		}
	}
	return out
}
