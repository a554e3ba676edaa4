package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
)

const guardrailPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
guardrails:
  images:
  - name: registries
    mode: deny
    namespaceSelector: {matchLabels: {team: "true"}}
    allowed: ["registry.example.com/", "docker.io/library/nginx"]
    requireDigest: true
  resources:
  - name: limits
    mode: warn
    namespaces: [team-b, team-a]
    maximums:
    - namespaces: [team-a]
      cpu: "2"
      memory: 4Gi
  podSecurity:
  - name: baseline
    mode: deny
    level: baseline
    namespaceSelector: {matchLabels: {team: "true"}}
  - name: restricted-warn
    mode: warn
    level: restricted
    namespaces: [team-a]
  networkPolicies:
  - name: isolate
    namespaces: [team-a, gone]
    allow:
    - name: from-ingress
      podSelector: {matchLabels: {app: web}}
      from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress}}}]
      ports: [{port: 8080}]
  exemptions:
  - guardrails: [registries, limits]
    namespace: team-a
    workload: legacy
    reason: TICKET-1 vendor image until migration
    expires: "2030-01-01T00:00:00Z"
  - guardrails: [baseline]
    namespace: team-b
    reason: TICKET-2
    expires: "2029-01-01T00:00:00Z"
`

var guardrailNamespaces = []Namespace{
	{Name: "team-a", Labels: map[string]string{"team": "true"}},
	{Name: "team-b", Labels: map[string]string{"team": "true"}},
	{Name: "other"},
}

func TestDesiredGuardrails(t *testing.T) {
	p := mustLoad(t, guardrailPolicy)
	now := time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)
	g, err := DesiredGuardrails(p, guardrailNamespaces, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range g.All() {
		kind, _ := kindOf(o)
		names = append(names, kind+" "+displayName(o.GetNamespace(), o.GetName()))
		if o.GetLabels()[ManagedByLabel] != ManagedByValue || o.GetLabels()[GuardrailLabel] == "" {
			t.Errorf("%s: labels %v", o.GetName(), o.GetLabels())
		}
	}
	want := []string{
		"ValidatingAdmissionPolicy kaccess-limits", "ValidatingAdmissionPolicy kaccess-registries",
		"ValidatingAdmissionPolicyBinding kaccess-limits", "ValidatingAdmissionPolicyBinding kaccess-registries",
		// "gone" does not exist: nothing is rendered for it until it does.
		"NetworkPolicy team-a/kaccess-isolate-allow-from-ingress", "NetworkPolicy team-a/kaccess-isolate-default-deny",
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("objects:\n got %q\nwant %q", names, want)
	}
	reg, lim := g.Bindings[1], g.Bindings[0]
	if got := reg.Spec.ValidationActions; !reflect.DeepEqual(got, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("deny mode: validationActions %v", got)
	}
	if got := lim.Spec.ValidationActions; !reflect.DeepEqual(got, []admissionv1.ValidationAction{admissionv1.Warn}) {
		t.Errorf("warn mode: validationActions %v", got)
	}
	if got := lim.Spec.MatchResources.NamespaceSelector.MatchExpressions[0].Values; !reflect.DeepEqual(got, []string{"team-a", "team-b"}) {
		t.Errorf("namespaces become a sorted metadata.name selector, got %v", got)
	}
	if got := reg.Spec.MatchResources.NamespaceSelector.MatchLabels; got["team"] != "true" {
		t.Errorf("namespaceSelector copied: %v", got)
	}
	regPol := g.Policies[1]
	if len(regPol.Spec.Validations) != 2 {
		t.Errorf("requireDigest adds a second validation, got %d", len(regPol.Spec.Validations))
	}
	if len(regPol.Spec.MatchConditions) != 1 || !strings.Contains(regPol.Spec.MatchConditions[0].Expression, `"legacy"`) {
		t.Errorf("exemption in force is a matchCondition: %+v", regPol.Spec.MatchConditions)
	}
	var resources []string
	for _, r := range regPol.Spec.MatchConstraints.ResourceRules {
		resources = append(resources, r.Resources...)
	}
	if got := strings.Join(resources, ","); got != "pods,daemonsets,deployments,replicasets,statefulsets,cronjobs,jobs" {
		t.Errorf("resources matched: %s", got)
	}
	// team-a: baseline enforced, restricted warned; team-b is exempt from baseline.
	if got := g.NamespaceLabels["team-a"]; !reflect.DeepEqual(got, map[string]string{
		"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "restricted",
		PodSecurityOwnedLabel: "enforce.warn",
	}) {
		t.Errorf("team-a labels %v", got)
	}
	if got, ok := g.NamespaceLabels["team-b"]; ok {
		t.Errorf("team-b is exempt, got labels %v", got)
	}

	// Pure: same inputs, same output.
	again, _ := DesiredGuardrails(p, guardrailNamespaces, now)
	if !reflect.DeepEqual(g, again) {
		t.Error("DesiredGuardrails differs between two calls with the same inputs")
	}
}

func TestGuardrailExemptionExpiry(t *testing.T) {
	p := mustLoad(t, guardrailPolicy)
	before := time.Date(2029, 6, 1, 0, 0, 0, 0, time.UTC)
	if got := p.NextExpiry(time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("NextExpiry = %v, want the earliest", got)
	}
	if got := p.NextExpiry(before); !got.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("NextExpiry after the first expired = %v", got)
	}
	g, err := DesiredGuardrails(p, guardrailNamespaces, before)
	if err != nil {
		t.Fatal(err)
	}
	if g.NamespaceLabels["team-b"]["pod-security.kubernetes.io/enforce"] != LevelBaseline {
		t.Errorf("expired namespace exemption still applies: %v", g.NamespaceLabels["team-b"])
	}
	if w := p.GuardrailWarnings(before); len(w) != 1 || !strings.HasPrefix(w[0], "guardrails.exemptions[1].expires: expired") {
		t.Errorf("warnings %q", w)
	}
	after := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // expiry is exclusive: gone at that instant
	g, _ = DesiredGuardrails(p, guardrailNamespaces, after)
	for _, pol := range g.Policies {
		if len(pol.Spec.MatchConditions) != 0 {
			t.Errorf("%s keeps an expired exemption: %+v", pol.Name, pol.Spec.MatchConditions)
		}
	}
	if !p.NextExpiry(after).IsZero() {
		t.Error("no expiry left, NextExpiry should be zero")
	}
}

func TestGuardrailValidation(t *testing.T) {
	base := "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nguardrails:\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"scheme", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [\"https://r.io/\"]}]",
			"guardrails.images[0].allowed[0]: \"https://r.io/\": write the registry without a scheme"},
		{"no host", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [\"library/\"]}]",
			"guardrails.images[0].allowed[0]: \"library/\" must start with a registry host"},
		{"tag", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [\"r.io/app:1.0\"]}]",
			"guardrails.images[0].allowed[0]: \"r.io/app:1.0\" is not a registry or repository prefix"},
		{"bare registry", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [\"r.io\"]}]",
			"guardrails.images[0].allowed[0]: \"r.io\": a registry alone must end with \"/\""},
		{"mode", "  images: [{name: a, mode: block, namespaces: [x], allowed: [r.io/]}]",
			"guardrails.images[0].mode: must be \"warn\", \"audit\" or \"deny\", got \"block\""},
		{"scope", "  images: [{name: a, mode: deny, allowed: [r.io/]}]",
			"guardrails.images[0]: set one of namespaces and namespaceSelector"},
		{"resource", "  resources: [{name: a, mode: deny, namespaces: [x], limits: [gpu]}]",
			"guardrails.resources[0].limits[0]: must be one of cpu, memory, got \"gpu\""},
		{"quantity", "  resources: [{name: a, mode: deny, namespaces: [x], maximums: [{namespaces: [x], cpu: lots}]}]",
			"guardrails.resources[0].maximums[0].cpu: \"lots\" is not a Kubernetes quantity"},
		{"level", "  podSecurity: [{name: a, mode: deny, level: privileged, namespaces: [x]}]",
			"guardrails.podSecurity[0].level: must be \"baseline\" or \"restricted\""},
		{"port", "  networkPolicies: [{name: a, namespaces: [x], allow: [{name: f, from: [{podSelector: {}}], ports: [{port: 70000}]}]}]",
			"guardrails.networkPolicies[0].allow[0].ports[0].port: 70000"},
		{"peer", "  networkPolicies: [{name: a, namespaces: [x], allow: [{name: f, from: [{}]}]}]",
			"guardrails.networkPolicies[0].allow[0].from[0]: set namespaceSelector and/or podSelector"},
		{"duplicate name", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [r.io/]}]\n  podSecurity: [{name: a, mode: deny, level: baseline, namespaces: [x]}]",
			"guardrails.podSecurity[0].name: duplicate name \"a\""},
		{"unknown guardrail", "  exemptions: [{guardrails: [nope], namespace: x, reason: r, expires: \"2030-01-01T00:00:00Z\"}]",
			"guardrails.exemptions[0].guardrails[0]: unknown guardrail \"nope\""},
		{"expiry", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [r.io/]}]\n  exemptions: [{guardrails: [a], workload: w, reason: r, expires: tomorrow}]",
			"guardrails.exemptions[0].expires: \"tomorrow\" is not an RFC 3339 time"},
		{"reason", "  images: [{name: a, mode: deny, namespaces: [x], allowed: [r.io/]}]\n  exemptions: [{guardrails: [a], workload: w, expires: \"2030-01-01T00:00:00Z\"}]",
			"guardrails.exemptions[0].reason: required"},
		{"cel syntax", "  cel: [{name: a, mode: deny, namespaces: [x], expression: \"variables.containers.all(c,\", message: m}]",
			"guardrails.cel[0].expression: ERROR: <input>:1:"},
		{"cel type", "  cel: [{name: a, mode: deny, namespaces: [x], expression: \"size(variables.containers)\", message: m}]",
			"guardrails.cel[0].expression: evaluates to int, want bool"},
		{"cel message", "  cel: [{name: a, mode: deny, namespaces: [x], expression: \"true\"}]",
			"guardrails.cel[0].message: required"},
		{"psa workload", "  podSecurity: [{name: a, mode: deny, level: baseline, namespaces: [x]}]\n  exemptions: [{guardrails: [a], namespace: x, workload: w, reason: r, expires: \"2030-01-01T00:00:00Z\"}]",
			"guardrails.exemptions[0].guardrails[0]: guardrail \"a\" is a podSecurity guardrail, which acts on whole namespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(base + tc.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
	// An expired exemption is valid (a warning, not an error).
	if _, err := Load([]byte(base + "  images: [{name: a, mode: deny, namespaces: [x], allowed: [r.io/]}]\n" +
		"  exemptions: [{guardrails: [a], workload: w, reason: r, expires: \"2001-01-01T00:00:00Z\"}]\n")); err != nil {
		t.Fatalf("expired exemption refused: %v", err)
	}
}

func TestPlanNamespaceLabels(t *testing.T) {
	want := map[string]map[string]string{
		"a": {"pod-security.kubernetes.io/enforce": "baseline", PodSecurityOwnedLabel: "enforce"},
		"b": {"pod-security.kubernetes.io/enforce": "restricted", PodSecurityOwnedLabel: "enforce"},
	}
	nss := []Namespace{
		{Name: "a", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline", PodSecurityOwnedLabel: "enforce"}},
		// Set by a person: kept, not taken over.
		{Name: "b", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}},
		// Owned but no longer wanted: removed, the person's warn label kept.
		{Name: "c", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline",
			"pod-security.kubernetes.io/warn": "restricted", PodSecurityOwnedLabel: "enforce", "x": "y"}},
	}
	cs := PlanNamespaceLabels(want, nss)
	if len(cs) != 1 || cs[0].Name != "c" {
		t.Fatalf("changes %+v", cs)
	}
	got := cs[0].Desired.GetLabels()
	if !reflect.DeepEqual(got, map[string]string{"pod-security.kubernetes.io/warn": "restricted", "x": "y"}) {
		t.Errorf("c labels %v", got)
	}
	if cs := PlanNamespaceLabels(want, []Namespace{{Name: "a"}}); len(cs) != 1 || cs[0].Desired.GetLabels()[PodSecurityOwnedLabel] != "enforce" {
		t.Errorf("unlabelled namespace a: %+v", cs)
	}
}
