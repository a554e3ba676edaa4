package policy

import (
	"strings"
	"testing"
	"time"
)

const goodPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: deploy
  rules:
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get", "list", "watch", "update", "patch"]
- name: view
  ref: {kind: ClusterRole, name: view}
- name: admin
  ref: {kind: ClusterRole, name: admin}
bindings:
- name: devs
  groups: ["corp:k8s-devs"]
  role: deploy
  namespaces: ["team-a", "team-b"]
- name: readers
  groups: ["corp:k8s-readers", "corp:auditors"]
  role: view
  namespaceSelector:
    matchLabels: {kaccess.io/team: "true"}
- name: sre
  groups: ["corp:sre"]
  role: view
  clusterWide: true
elevations:
- name: team-a-admin
  role: admin
  namespaces: ["team-a"]
  requesters: ["corp:k8s-devs"]
  approvers: ["corp:sre"]
  maxDuration: 4h
- name: break-glass
  role: admin
  clusterWide: true
  requesters: ["corp:sre"]
  approvers: ["corp:sre-leads"]
  approvals: 2
  maxDuration: 1h
  reasonRequired: false
  allowSelfApproval: true
`

func TestLoadGood(t *testing.T) {
	t.Parallel()
	p, err := Load([]byte(goodPolicy))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(p.Roles) != 3 || len(p.Bindings) != 3 || len(p.Elevations) != 2 {
		t.Fatalf("got %d roles, %d bindings, %d elevations", len(p.Roles), len(p.Bindings), len(p.Elevations))
	}
	e := p.Elevations[0]
	if *e.Approvals != 1 || !*e.ReasonRequired || *e.AllowSelfApproval {
		t.Errorf("defaults: approvals %d reasonRequired %v allowSelfApproval %v", *e.Approvals, *e.ReasonRequired, *e.AllowSelfApproval)
	}
	if e.MaxDurationValue() != 4*time.Hour {
		t.Errorf("maxDuration = %v", e.MaxDurationValue())
	}
	bg := p.Elevations[1]
	if *bg.Approvals != 2 || *bg.ReasonRequired || !*bg.AllowSelfApproval {
		t.Errorf("explicit values lost: %+v", bg)
	}
}

// edit replaces the first occurrence of old in goodPolicy.
func edit(old, new string) string {
	if !strings.Contains(goodPolicy, old) {
		panic("test fixture does not contain " + old)
	}
	return strings.Replace(goodPolicy, old, new, 1)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings that must all be in the error
	}{
		{"unknown field", edit("clusterWide: true\nelevations", "clusterwide: true\nelevations"), []string{`unknown field "bindings[2].clusterwide"`}},
		{"apiVersion", edit("kaccess.io/v1alpha1", "kaccess.io/v1"), []string{`apiVersion: must be "kaccess.io/v1alpha1"`}},
		{"kind", edit("kind: AccessPolicy", "kind: Policy"), []string{"kind: must be"}},
		{"unknown role", edit("role: deploy", "role: deployer"), []string{`bindings[0].role: unknown role "deployer"`}},
		{"namespaces and clusterWide", edit("namespaces: [\"team-a\", \"team-b\"]", "namespaces: [\"team-a\"]\n  clusterWide: true"),
			[]string{"bindings[0]: set exactly one of namespaces, namespaceSelector and clusterWide"}},
		{"no scope", edit("  namespaces: [\"team-a\", \"team-b\"]\n", ""), []string{"bindings[0]: set exactly one"}},
		{"elevation both scopes", edit("namespaces: [\"team-a\"]\n  requesters", "namespaces: [\"team-a\"]\n  clusterWide: true\n  requesters"),
			[]string{"elevations[0]: set only one of namespaces and clusterWide"}},
		{"approvals zero", edit("approvals: 2", "approvals: 0"), []string{"elevations[1].approvals: must be at least 1"}},
		{"bad duration", edit("maxDuration: 4h", "maxDuration: four hours"), []string{`elevations[0].maxDuration: "four hours" is not a duration`}},
		{"duration over 24h", edit("maxDuration: 4h", "maxDuration: 25h"), []string{"elevations[0].maxDuration: 25h exceeds the limit of 24h"}},
		{"missing duration", edit("  maxDuration: 4h\n", ""), []string{"elevations[0].maxDuration: required"}},
		{"duplicate role", edit("- name: view\n", "- name: deploy\n"), []string{`roles[1].name: duplicate name "deploy"`}},
		{"duplicate binding", edit("- name: readers", "- name: devs"), []string{`bindings[1].name: duplicate name "devs"`}},
		{"empty group", edit(`groups: ["corp:sre"]`, `groups: [""]`), []string{"bindings[2].groups[0]: empty group name"}},
		{"no groups", edit(`groups: ["corp:sre"]`, `groups: []`), []string{"bindings[2].groups: at least one group"}},
		{"no approvers", edit(`approvers: ["corp:sre"]`, `approvers: []`), []string{"elevations[0].approvers: at least one group"}},
		{"bad name", edit("name: devs", "name: Devs_Team"), []string{`bindings[0].name: "Devs_Team" is not a DNS-1123 label`}},
		{"bad namespace", edit(`"team-b"]`, `"Team B"]`), []string{`bindings[0].namespaces[1]: "Team B" is not a namespace name`}},
		{"bad selector", edit("matchLabels: {kaccess.io/team: \"true\"}", "matchExpressions: [{key: team, operator: Sometimes}]"),
			[]string{"bindings[1].namespaceSelector:"}},
		{"rules and ref", edit("ref: {kind: ClusterRole, name: view}", "ref: {kind: ClusterRole, name: view}\n  rules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]"),
			[]string{"roles[1]: set only one of rules and ref"}},
		{"bad ref kind", edit("kind: ClusterRole, name: view", "kind: Group, name: view"), []string{`roles[1].ref.kind: must be "ClusterRole" or "Role"`}},
		{"rule without verbs", edit(`verbs: ["get", "list", "watch", "update", "patch"]`, `verbs: []`), []string{"roles[0].rules[0].verbs: at least one verb"}},
		{"rule without apiGroups", edit(`apiGroups: ["apps"]`, `apiGroups: []`), []string{"roles[0].rules[0].apiGroups: required"}},
		{"Role ref cluster-wide", edit("kind: ClusterRole, name: view", "kind: Role, name: view"),
			[]string{`bindings[2].clusterWide: role "view" refers to a namespaced Role`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Load succeeded, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	y := strings.NewReplacer("role: deploy", "role: nope", "maxDuration: 4h", "maxDuration: 48h", `approvers: ["corp:sre"]`, `approvers: [""]`).Replace(goodPolicy)
	_, err := Load([]byte(y))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`bindings[0].role: unknown role "nope"`,
		"elevations[0].approvers[0]: empty group name",
		"elevations[0].maxDuration: 48h exceeds the limit of 24h",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
}
