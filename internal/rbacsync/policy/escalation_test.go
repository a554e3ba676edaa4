package policy

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

func rule(groups, resources, verbs string) rbacv1.PolicyRule {
	split := func(s string) []string {
		if s == "-" {
			return []string{""}
		}
		return strings.Split(s, ",")
	}
	return rbacv1.PolicyRule{APIGroups: split(groups), Resources: split(resources), Verbs: split(verbs)}
}

func TestCheckEscalation(t *testing.T) {
	t.Parallel()
	const rbac = "rbac.authorization.k8s.io"
	tests := []struct {
		name  string
		rules []rbacv1.PolicyRule
		want  []string // "class@rule"
	}{
		{"read-only role is clean", []rbacv1.PolicyRule{
			rule("-", "pods,services,configmaps,pods/log", "get,list,watch"),
			rule("apps", "deployments,replicasets", "get,list,watch"),
			{NonResourceURLs: []string{"*"}, Verbs: []string{"get"}},
		}, nil},
		{"escalate", []rbacv1.PolicyRule{rule(rbac, "clusterroles", "escalate")}, []string{"escalate-verb@0"}},
		{"bind", []rbacv1.PolicyRule{rule(rbac, "rolebindings", "get"), rule(rbac, "roles", "bind")}, []string{"bind-verb@1"}},
		{"impersonate", []rbacv1.PolicyRule{rule("-", "users,groups", "impersonate")}, []string{"impersonate@0"}},
		{"rbac write", []rbacv1.PolicyRule{rule(rbac, "rolebindings", "create")}, []string{"rbac-write@0"}},
		{"rbac read is fine", []rbacv1.PolicyRule{rule(rbac, "roles,rolebindings", "get,list,watch")}, nil},
		{"serviceaccount token", []rbacv1.PolicyRule{rule("-", "serviceaccounts/token", "create")}, []string{"serviceaccount-token@0"}},
		{"secrets", []rbacv1.PolicyRule{rule("-", "secrets", "list")}, []string{"secrets-read@0"}},
		{"secrets write only", []rbacv1.PolicyRule{rule("-", "secrets", "create")}, nil},
		{"exec", []rbacv1.PolicyRule{rule("-", "pods/exec", "create")}, []string{"pod-exec@0"}},
		{"node proxy", []rbacv1.PolicyRule{rule("-", "nodes/proxy", "get")}, []string{"node-proxy@0"}},
		{"create pods", []rbacv1.PolicyRule{rule("-", "pods", "create")}, []string{"pod-create@0"}},
		{"create deployments", []rbacv1.PolicyRule{rule("apps", "deployments", "create,update")}, []string{"pod-create@0"}},
		{"update deployments only", []rbacv1.PolicyRule{rule("apps", "deployments", "update,patch")}, nil},
		{"csr approval", []rbacv1.PolicyRule{rule("certificates.k8s.io", "certificatesigningrequests/approval", "update")}, []string{"csr-approval@0"}},
		{"webhooks", []rbacv1.PolicyRule{rule("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch")}, []string{"webhook-config@0"}},
		{"wildcard resources", []rbacv1.PolicyRule{rule("*", "*", "get")}, []string{"wildcard-resources@0"}},
		{"wildcard verbs", []rbacv1.PolicyRule{rule("-", "configmaps", "*")}, []string{"wildcard-verbs@0"}},
		{"wildcard verbs on secrets", []rbacv1.PolicyRule{rule("-", "secrets", "*")}, []string{"wildcard-verbs@0", "secrets-read@0"}},
		{"wildcard group", []rbacv1.PolicyRule{rule("*", "secrets", "get")}, []string{"secrets-read@0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, f := range CheckEscalation(tt.rules) {
				if f.Reason == "" || f.Severity == "" {
					t.Errorf("finding without reason or severity: %+v", f)
				}
				got = append(got, f.Class+"@"+strconv.Itoa(f.Rule))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	y := goodPolicy + `
- name: secret-reader
  role: deploy
  namespaces: ["team-a"]
  requesters: ["corp:k8s-devs"]
  approvers: ["corp:sre"]
  maxDuration: 30m
`
	y = strings.Replace(y, `verbs: ["get", "list", "watch", "update", "patch"]`,
		`verbs: ["get", "list", "watch", "update", "patch"]
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get"]`, 1)
	p := mustLoad(t, y)
	var got []string
	for _, w := range p.Warnings() {
		got = append(got, w.String())
	}
	want := []string{
		"elevations[0] (team-a-admin) role admin: critical: admin may create RoleBindings in its namespace, granting its own rights to anyone",
		"elevations[0] (team-a-admin) role admin: high: admin reads secrets, exposing other identities' credentials",
		"elevations[0] (team-a-admin) role admin: high: admin may exec into pods and run them as any service account of the namespace",
		"elevations[1] (break-glass) role admin: critical: admin may create RoleBindings in its namespace, granting its own rights to anyone",
		"elevations[1] (break-glass) role admin: high: admin reads secrets, exposing other identities' credentials",
		"elevations[1] (break-glass) role admin: high: admin may exec into pods and run them as any service account of the namespace",
		"elevations[2] (secret-reader) role deploy rules[1]: high: reading secrets exposes service account tokens and credentials of other identities",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
