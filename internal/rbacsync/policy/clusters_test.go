package policy

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var testClusters = []Cluster{
	{Name: "prod-eu", Labels: map[string]string{"env": "prod", "region": "eu"}},
	{Name: "prod-us", Labels: map[string]string{"env": "prod", "region": "us"}},
	{Name: "stage", Labels: map[string]string{"env": "stage"}},
	{Name: "bare"},
}

func TestTargetSelect(t *testing.T) {
	t.Parallel()
	sel := func(ml map[string]string) *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: ml} }
	tests := []struct {
		name   string
		target Target
		want   []string
	}{
		{"none is every cluster", Target{}, []string{"prod-eu", "prod-us", "stage", "bare"}},
		{"names", Target{Clusters: []string{"stage", "prod-us"}}, []string{"prod-us", "stage"}},
		{"unknown name selects nothing", Target{Clusters: []string{"gone"}}, nil},
		{"selector", Target{ClusterSelector: sel(map[string]string{"env": "prod"})}, []string{"prod-eu", "prod-us"}},
		{"selector on two labels", Target{ClusterSelector: sel(map[string]string{"env": "prod", "region": "us"})}, []string{"prod-us"}},
		{"selector matching nothing", Target{ClusterSelector: sel(map[string]string{"env": "dev"})}, nil},
		{"empty selector is every cluster", Target{ClusterSelector: sel(nil)}, []string{"prod-eu", "prod-us", "stage", "bare"}},
		{"names or selector", Target{Clusters: []string{"bare"}, ClusterSelector: sel(map[string]string{"env": "stage"})}, []string{"stage", "bare"}},
		{"expressions", Target{ClusterSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "env", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"prod"}}}}}, []string{"stage", "bare"}},
		{"malformed selector matches nothing", Target{ClusterSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "env", Operator: "Sometimes"}}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.target.Select(testClusters); !slices.Equal(got, tt.want) {
				t.Errorf("Select = %v, want %v", got, tt.want)
			}
		})
	}
}

const targetedPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: view
  ref: {kind: ClusterRole, name: view}
bindings:
- name: everywhere
  groups: ["corp:all"]
  role: view
  clusterWide: true
- name: prod-only
  groups: ["corp:prod"]
  role: view
  clusterWide: true
  clusterSelector: {matchLabels: {env: prod}}
- name: stage-only
  groups: ["corp:stage"]
  role: view
  clusterWide: true
  clusters: [stage, elsewhere]
elevations:
- name: prod-admin
  role: view
  clusterWide: true
  requesters: ["corp:sre"]
  approvers: ["corp:leads"]
  maxDuration: 1h
  clusterSelector: {matchLabels: {env: prod}}
guardrails:
  images:
  - name: registry
    mode: deny
    namespaceSelector: {}
    allowed: ["registry.example.com/"]
    clusters: [prod-eu]
  hostAccess:
  - name: no-host
    mode: deny
    namespaceSelector: {}
    clusterSelector: {matchLabels: {env: prod}}
  cel:
  - name: no-latest
    mode: warn
    namespaceSelector: {}
    expression: 'variables.containers.all(c, !c.image.endsWith(":latest"))'
    message: no latest
    clusters: [stage]
  podSecurity:
  - name: baseline
    mode: warn
    level: baseline
    namespaceSelector: {}
  exemptions:
  - guardrails: [registry, baseline]
    namespace: legacy
    reason: TICKET-1
    expires: "2099-01-01T00:00:00Z"
  - guardrails: [registry]
    namespace: other
    reason: TICKET-2
    expires: "2099-01-01T00:00:00Z"
`

func TestForCluster(t *testing.T) {
	t.Parallel()
	p, err := Load([]byte(targetedPolicy))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	names := func(p *Policy) (bindings, elevations, guardrails []string, exemptions int) {
		for _, b := range p.Bindings {
			bindings = append(bindings, b.Name)
		}
		for _, e := range p.Elevations {
			elevations = append(elevations, e.Name)
		}
		if p.Guardrails != nil {
			for _, r := range p.Guardrails.Images {
				guardrails = append(guardrails, r.Name)
			}
			for _, r := range p.Guardrails.HostAccess {
				guardrails = append(guardrails, r.Name)
			}
			for _, r := range p.Guardrails.CEL {
				guardrails = append(guardrails, r.Name)
			}
			for _, r := range p.Guardrails.PodSecurity {
				guardrails = append(guardrails, r.Name)
			}
			exemptions = len(p.Guardrails.Exemptions)
		}
		return
	}
	tests := []struct {
		cluster              Cluster
		bindings, elevations []string
		guardrails           []string
		exemptions           int
	}{
		{testClusters[0], []string{"everywhere", "prod-only"}, []string{"prod-admin"}, []string{"registry", "no-host", "baseline"}, 2},
		{testClusters[1], []string{"everywhere", "prod-only"}, []string{"prod-admin"}, []string{"no-host", "baseline"}, 1},
		{testClusters[2], []string{"everywhere", "stage-only"}, nil, []string{"no-latest", "baseline"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.cluster.Name, func(t *testing.T) {
			t.Parallel()
			fc := p.ForCluster(tt.cluster)
			if err := fc.Validate(); err != nil {
				t.Fatalf("the policy for one cluster is not valid: %v", err)
			}
			b, e, g, x := names(fc)
			if !slices.Equal(b, tt.bindings) || !slices.Equal(e, tt.elevations) || !slices.Equal(g, tt.guardrails) || x != tt.exemptions {
				t.Errorf("got bindings %v elevations %v guardrails %v exemptions %d, want %v %v %v %d",
					b, e, g, x, tt.bindings, tt.elevations, tt.guardrails, tt.exemptions)
			}
			if len(fc.Roles) != len(p.Roles) {
				t.Errorf("roles = %d, want all %d", len(fc.Roles), len(p.Roles))
			}
		})
	}
	// The exemption of cluster prod-us lost the guardrail that is not there; the original keeps it.
	if got := p.ForCluster(testClusters[1]).Guardrails.Exemptions[0].Guardrails; !slices.Equal(got, []string{"baseline"}) {
		t.Errorf("exemption guardrails on prod-us = %v, want [baseline]", got)
	}
	if got := p.Guardrails.Exemptions[0].Guardrails; len(got) != 2 {
		t.Errorf("ForCluster changed the policy's exemption: %v", got)
	}
}

func TestUnknownClusters(t *testing.T) {
	t.Parallel()
	p, err := Load([]byte(targetedPolicy))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := p.UnknownClusters(testClusters[:3])
	want := []string{`bindings[2].clusters[1]: no cluster named "elsewhere"`, `guardrails.images[0].clusters[0]: no cluster named "prod-eu"`}
	if len(got) != 1 || !strings.Contains(got[0], want[0]) {
		t.Errorf("UnknownClusters = %q, want one containing %q", got, want[0])
	}
	got = p.UnknownClusters(testClusters[1:2])
	if len(got) != 4 || !strings.Contains(got[2], want[1]) {
		t.Errorf("UnknownClusters = %q, want 4, the third containing %q", got, want[1])
	}
}

func TestTargetValidation(t *testing.T) {
	t.Parallel()
	tests := []struct{ from, to, want string }{
		{"clusters: [stage, elsewhere]", "clusters: [Stage_1]", `bindings[2].clusters[0]: "Stage_1" is not a cluster name`},
		{"clusters: [stage, elsewhere]", "clusters: [stage, stage]", `bindings[2].clusters[1]: duplicate cluster "stage"`},
		{"  maxDuration: 1h\n  clusterSelector: {matchLabels: {env: prod}}", "  maxDuration: 1h\n  clusterSelector: {matchExpressions: [{key: env, operator: Sometimes}]}",
			"elevations[0].clusterSelector:"},
		{"clusters: [prod-eu]", "clusterSelector: {matchLabels: {env: \"not valid!\"}}", "guardrails.images[0].clusterSelector:"},
		{"clusters: [prod-eu]", "clusterz: [prod-eu]", `unknown field "guardrails.images[0].clusterz"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(targetedPolicy, tt.from) {
				t.Fatalf("test edit %q not in the policy", tt.from)
			}
			_, err := Load([]byte(strings.Replace(targetedPolicy, tt.from, tt.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
