package policy

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
)

// Severity ranks a Finding.
type Severity string

// Severities. Critical: the role can grant itself or anyone anything (cluster-admin in a few
// steps). High: it reaches credentials or runs code as other identities.
const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
)

// Finding is one escalation path in a role.
type Finding struct {
	Severity Severity
	// Rule is the index of the rule in the role's rules; -1 for a well-known referenced role.
	Rule int
	// Class is a short stable identifier ("rbac-write", "secrets-read").
	Class string
	// Reason is a sentence saying why.
	Reason string
}

var (
	writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection"}
	readVerbs  = []string{"get", "list", "watch"}
	// nodeProxyVerbs: even get on nodes/proxy reaches the kubelet exec endpoint.
	nodeProxyVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	rbacKinds      = []string{"roles", "clusterroles", "rolebindings", "clusterrolebindings"}
	// podCreators create pods from a template: whoever may create them may run a pod as any
	// service account of the namespace.
	podCreators = []struct{ group, resource string }{
		{"", "pods"}, {"", "replicationcontrollers"}, {"apps", "deployments"}, {"apps", "replicasets"},
		{"apps", "statefulsets"}, {"apps", "daemonsets"}, {"batch", "jobs"}, {"batch", "cronjobs"},
	}
)

// ruleLike is the part of a PolicyRule the checks read.
type ruleLike struct{ groups, resources, verbs []string }

func (r ruleLike) allows(group, resource string, verbs ...string) bool {
	return matches(r.groups, group) && matches(r.resources, resource) &&
		slices.ContainsFunc(verbs, func(v string) bool { return matches(r.verbs, v) })
}

func (r ruleLike) allowsAny(group string, resources []string, verbs ...string) bool {
	return slices.ContainsFunc(resources, func(res string) bool { return r.allows(group, res, verbs...) })
}

func matches(list []string, v string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, v)
}

// check is one escalation class.
type check struct {
	class    string
	severity Severity
	applies  func(r ruleLike) bool
	reason   string
}

var checks = []check{
	{"escalate-verb", SeverityCritical, func(r ruleLike) bool { return r.allowsAny(rbacGroup, rbacKinds, "escalate") },
		"the escalate verb lets it create or update roles with permissions it does not hold"},
	{"bind-verb", SeverityCritical, func(r ruleLike) bool { return r.allowsAny(rbacGroup, rbacKinds, "bind") },
		"the bind verb lets it bind any role, including cluster-admin, to anyone"},
	{"impersonate", SeverityCritical, func(r ruleLike) bool {
		res := []string{"users", "groups", "serviceaccounts", "uids", "userextras/*"}
		return r.allowsAny("", res, "impersonate") || r.allowsAny("authentication.k8s.io", res, "impersonate")
	}, "the impersonate verb lets it act as another user, group or service account, with all their rights"},
	{"rbac-write", SeverityCritical, func(r ruleLike) bool {
		return r.allowsAny(rbacGroup, rbacKinds, writeVerbs...)
	}, "writing RBAC roles or bindings lets it change who may do what (limited only by escalation checks on its own rights)"},
	{"serviceaccount-token", SeverityCritical, func(r ruleLike) bool { return r.allows("", "serviceaccounts/token", "create") },
		"creating serviceaccounts/token mints tokens for any service account in scope and acts with its rights"},
	{"node-proxy", SeverityCritical, func(r ruleLike) bool { return r.allows("", "nodes/proxy", nodeProxyVerbs...) },
		"nodes/proxy reaches the kubelet API directly, which can exec into any pod on the node and bypasses audit"},
	{"csr-approval", SeverityCritical, func(r ruleLike) bool {
		return r.allows("certificates.k8s.io", "certificatesigningrequests/approval", "update", "patch")
	}, "approving certificate signing requests can issue client certificates for any user or group"},
	{"webhook-config", SeverityCritical, func(r ruleLike) bool {
		return r.allows("admissionregistration.k8s.io", "mutatingwebhookconfigurations", writeVerbs...) ||
			r.allows("admissionregistration.k8s.io", "validatingwebhookconfigurations", writeVerbs...)
	}, "writing admission webhook configurations lets it see and rewrite every object sent to the API server"},
	{"secrets-read", SeverityHigh, func(r ruleLike) bool { return r.allows("", "secrets", readVerbs...) },
		"reading secrets exposes service account tokens and credentials of other identities"},
	{"pod-exec", SeverityHigh, func(r ruleLike) bool {
		return r.allows("", "pods/exec", "create", "get") || r.allows("", "pods/attach", "create", "get")
	}, "pods/exec and pods/attach run commands in pods, with their service accounts and mounted secrets"},
	{"pod-create", SeverityHigh, func(r ruleLike) bool {
		return slices.ContainsFunc(podCreators, func(p struct{ group, resource string }) bool { return r.allows(p.group, p.resource, "create") })
	}, "creating pods (directly or through a workload) can mount any service account of the namespace and its secrets"},
}

const rbacGroup = "rbac.authorization.k8s.io"

// CheckEscalation returns the escalation paths the rules allow, in rule order then by class.
// A rule with "*" resources gets one critical finding and no others; "*" verbs get a medium
// finding in addition to the specific ones.
func CheckEscalation(rules []rbacv1.PolicyRule) []Finding {
	var out []Finding
	for i, pr := range rules {
		if len(pr.NonResourceURLs) > 0 {
			continue // non-resource URLs (/healthz, /metrics) reach no objects
		}
		r := ruleLike{groups: pr.APIGroups, resources: pr.Resources, verbs: pr.Verbs}
		if slices.Contains(r.resources, "*") {
			out = append(out, Finding{SeverityCritical, i, "wildcard-resources",
				"\"*\" resources cover secrets, RBAC objects and every resource added later"})
			continue
		}
		if slices.Contains(r.verbs, "*") {
			out = append(out, Finding{SeverityMedium, i, "wildcard-verbs",
				"\"*\" verbs include escalate, bind and impersonate and every verb added later"})
		}
		for _, c := range checks {
			if c.applies(r) {
				out = append(out, Finding{c.severity, i, c.class, c.reason})
			}
		}
	}
	return out
}
