package event

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kaccess/kaccess/internal/authn"
)

var (
	alice = &authn.Identity{User: "alice", Groups: []string{"ad:devs"}}
	bob   = &authn.Identity{User: "bob", Groups: []string{"ad:ops", "ad:admins"}}
	carol = &authn.Identity{User: "carol"}
)

func res(verb, group, resource, sub, ns, name string) *genericrequest.RequestInfo {
	return &genericrequest.RequestInfo{IsResourceRequest: true, Verb: verb, APIGroup: group, APIVersion: "v1",
		Resource: resource, Subresource: sub, Namespace: ns, Name: name}
}

func nonRes(verb, path string) *genericrequest.RequestInfo {
	return &genericrequest.RequestInfo{Verb: verb, Path: path}
}

const testPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
# users
- level: None
  users: ["system:kube-proxy"]
# groups
- level: RequestResponse
  userGroups: ["ad:admins"]
  verbs: ["delete"]
# resource names within a group
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
    resourceNames: ["aws-auth"]
# subresources and omitStages
- level: Request
  resources:
  - group: ""
    resources: ["pods/exec", "pods/attach"]
  omitStages: ["ResponseStarted"]
# namespaces
- level: Request
  namespaces: ["kube-system"]
# non-resource URLs with a trailing wildcard
- level: None
  nonResourceURLs: ["/healthz*", "/readyz"]
# verbs
- level: Metadata
  verbs: ["get", "list", "watch"]
# first match wins: this later, broader rule never sees reads
- level: RequestResponse
`

func TestPolicyEvaluation(t *testing.T) {
	t.Parallel()
	p, err := LoadPolicy([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   *authn.Identity
		info *genericrequest.RequestInfo
		want Level
	}{
		{"user matched", &authn.Identity{User: "system:kube-proxy"}, res("list", "", "endpoints", "", "", ""), LevelNone},
		{"group and verb matched", bob, res("delete", "apps", "deployments", "", "shop", "web"), LevelRequestResponse},
		{"group matched, verb not", bob, res("get", "apps", "deployments", "", "shop", "web"), LevelMetadata},
		{"verb matched, group not", alice, res("delete", "apps", "deployments", "", "shop", "web"), LevelRequestResponse},
		{"resource name matched", alice, res("update", "", "configmaps", "", "kube-system", "aws-auth"), LevelRequestResponse},
		{"resource name not matched falls to namespace rule", alice, res("update", "", "configmaps", "", "kube-system", "other"), LevelRequest},
		{"subresource matched", alice, res("create", "", "pods", "exec", "shop", "web-1"), LevelRequest},
		{"resource without the subresource does not match pods/exec", alice, res("create", "", "pods", "", "shop", "web-1"), LevelRequestResponse},
		{"namespace matched", carol, res("create", "apps", "deployments", "", "kube-system", "dns"), LevelRequest},
		{"non-resource wildcard", nil, nonRes("get", "/healthz/etcd"), LevelNone},
		{"non-resource exact", nil, nonRes("get", "/readyz"), LevelNone},
		{"non-resource not matched", nil, nonRes("get", "/version"), LevelMetadata},
		{"non-resource rule ignores resource requests", alice, res("create", "", "pods", "", "healthz", ""), LevelRequestResponse},
		{"first matching rule wins", carol, res("list", "", "secrets", "", "kube-system", ""), LevelRequest},
		{"catch-all", carol, res("patch", "", "nodes", "", "", "n1"), LevelRequestResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.LevelFor(Attributes(tt.id, tt.info)); got != tt.want {
				t.Errorf("LevelFor = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPolicyOmitStages(t *testing.T) {
	t.Parallel()
	p, err := LoadPolicy([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	exec := p.Evaluate(Attributes(alice, res("create", "", "pods", "exec", "shop", "web-1")))
	if !exec.Omits(StageStarted) || exec.Omits(StageEnded) || exec.Omits(StageComplete) {
		t.Errorf("exec rule: want only the started stage omitted, got %+v", exec)
	}
	other := p.Evaluate(Attributes(alice, res("get", "", "pods", "", "shop", "web-1")))
	if other.Omits(StageStarted) || other.Omits(StageComplete) {
		t.Errorf("policy-wide RequestReceived must not omit kaccess stages, got %+v", other)
	}
}

func TestNoRuleMatchedIsNone(t *testing.T) {
	t.Parallel()
	p, err := LoadPolicy([]byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  users: [alice]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.LevelFor(Attributes(bob, res("get", "", "pods", "", "a", "b"))); got != LevelNone {
		t.Errorf("unmatched request: %s, want None (kube-apiserver semantics)", got)
	}
}

func TestAnonymousMatchesUnauthenticatedGroup(t *testing.T) {
	t.Parallel()
	p, err := LoadPolicy([]byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n  userGroups: [system:unauthenticated]\n- level: None\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.LevelFor(Attributes(nil, res("get", "", "pods", "", "a", "b"))); got != LevelRequestResponse {
		t.Errorf("anonymous request: %s, want RequestResponse", got)
	}
}

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	tests := []struct {
		name string
		info *genericrequest.RequestInfo
		want Level
	}{
		{"secret read", res("get", "", "secrets", "", "shop", "db"), LevelMetadata},
		{"secret write keeps no body", res("create", "", "secrets", "", "shop", "db"), LevelMetadata},
		{"configmap write", res("update", "", "configmaps", "", "shop", "cfg"), LevelMetadata},
		{"token request", res("create", "", "serviceaccounts", "token", "shop", "sa"), LevelMetadata},
		{"token review", res("create", "authentication.k8s.io", "tokenreviews", "", "", ""), LevelMetadata},
		{"cluster role binding created", res("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", "x"), LevelRequestResponse},
		{"webhook configuration patched", res("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", "x"), LevelRequestResponse},
		{"role read", res("get", "rbac.authorization.k8s.io", "roles", "", "shop", "x"), LevelMetadata},
		{"deployment scaled", res("patch", "apps", "deployments", "scale", "shop", "web"), LevelRequest},
		{"exec", res("create", "", "pods", "exec", "kube-system", "etcd-0"), LevelRequest},
		{"pod list", res("list", "", "pods", "", "", ""), LevelMetadata},
		{"watch", res("watch", "", "pods", "", "shop", ""), LevelMetadata},
		{"non-resource", nonRes("get", "/version"), LevelMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.LevelFor(Attributes(alice, tt.info)); got != tt.want {
				t.Errorf("LevelFor = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestLoadPolicyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "  \n", "empty document"},
		{"not yaml", "rules: [", "yaml"},
		{"misspelled field", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  namespace: [a]\n", `unknown field "namespace"`},
		{"wrong kind", "apiVersion: audit.k8s.io/v1\nkind: Pod\nrules:\n- level: None\n", `kind "Pod"`},
		{"old version", "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n", `apiVersion "audit.k8s.io/v1beta1"`},
		{"bad level", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n", "Everything"},
		{"bad stage", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  omitStages: [Sometimes]\n", "Sometimes"},
		{"no rules", "apiVersion: audit.k8s.io/v1\nkind: Policy\n", "0 rules"},
		{"resources and nonResourceURLs together", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [/x]\n  resources: [{group: \"\"}]\n", "nonResourceURLs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadPolicy([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadPolicy error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadPolicyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(good, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicyFile(good); err != nil {
		t.Errorf("LoadPolicyFile: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Policy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicyFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("error %v does not name the file", err)
	}
	if _, err := LoadPolicyFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

func BenchmarkDefaultPolicyLevelFor(b *testing.B) {
	p := DefaultPolicy()
	info := res("list", "", "pods", "", "shop", "")
	b.ReportAllocs()
	for b.Loop() {
		p.LevelFor(Attributes(alice, info))
	}
}
