package detect

import (
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// plant adds one case per detection to the window day, each by a user at an ordinary hour for
// them (unless the case is the hour), so that each plant stands for its own detection.
func (s *scenario) plant() {
	g := s.gen
	at := func(h, m int) time.Time {
		return windowFrom.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
	}
	add := func(name, subject string, evs ...*event.Event) {
		p := plant{subject: subject}
		for _, e := range evs {
			p.ids = append(p.ids, e.EventID)
		}
		s.plants[name] = append(s.plants[name], p)
	}
	var evs []*event.Event

	// Carol, who never read a secret, reads one in payments.
	evs = nil
	for i := range 2 {
		evs = append(evs, g.request("carol", "10.1.0.31", kubectl, action{verb: "get", resource: "secrets", namespace: "payments"}, at(10, 15+i), 200))
	}
	add("secret-first-access", "carol", evs...)

	// Dave opens a shell in a kube-system pod: a long-running request, started and ended.
	start := g.request("dave.ops", "10.3.0.41", kubectl, action{verb: "create", resource: "pods", subresource: "exec", namespace: "kube-system"}, at(11, 0), 101)
	start.Stage = event.StageStarted
	end := *start
	end.EventID, end.Time, end.Stage, end.Duration = event.NewID(), at(11, 4), event.StageEnded, 4*time.Minute
	g.seq++
	end.Seq = g.seq
	g.events = append(g.events, &end)
	add("exec-protected-namespace", "dave.ops", start, &end)

	// Bob binds cluster-admin to a second account of his.
	rb := g.request("bob@corp.example", "10.2.0.21", kubectl, action{verb: "create", resource: "clusterrolebindings"}, at(15, 0), 201)
	rb.Name, rb.Level = "tmp-debug", "RequestResponse"
	rb.RequestBody = binding("tmp-debug", "", "ClusterRole", "cluster-admin", "User", "bob-alt@corp.example")
	rb.RequestURI = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
	add("privileged-binding", "bob@corp.example", rb)

	// Erin tries to act as system:admin and is refused.
	evs = nil
	for i := range 3 {
		evs = append(evs, g.request("erin-sre", "10.4.0.51", kubectl,
			action{verb: "list", resource: "secrets", namespace: "kube-system", impersonate: "system:admin"}, at(23, 10+i), 403))
	}
	add("impersonation-refused", "erin-sre", evs...)

	// Alice probes what she may do: 35 refusals in under two minutes.
	evs = nil
	probes := []action{{verb: "list", resource: "nodes"}, {verb: "list", resource: "clusterroles"},
		{verb: "get", resource: "pods", namespace: "kube-system"}, {verb: "create", resource: "pods", namespace: "default"}}
	for i := range 35 {
		evs = append(evs, g.request("alice@corp.example", "10.1.0.11", kubectl, probes[i%len(probes)], at(10, 0).Add(time.Duration(i)*3*time.Second), 403))
	}
	add("auth-failure-burst", "alice@corp.example", evs...)

	// Carol, a day worker, is active at two in the morning.
	evs = nil
	for i := range 15 {
		evs = append(evs, g.request("carol", "10.1.0.32", kubectl, action{verb: "list", resource: "deployments", namespace: "payments"}, at(2, 10+2*i), 200))
	}
	add("unusual-hours", "carol", evs...)

	// Bob's account is used from an address and a client never seen for him.
	evs = nil
	for i := range 6 {
		evs = append(evs, g.request("bob@corp.example", "203.0.113.50", "python-requests/2.32.3", action{verb: "list", resource: "pods", namespace: "web"}, at(16, i), 200))
	}
	add("new-source", "bob@corp.example", evs...)

	// Dave deletes 80 pods in under three minutes.
	evs = nil
	for i := range 80 {
		evs = append(evs, g.request("dave.ops", "10.3.0.41", kubectl, action{verb: "delete", resource: "pods", namespace: "web"}, at(11, 30).Add(time.Duration(i)*2*time.Second), 200))
	}
	add("mass-delete", "dave.ops", evs...)

	// Erin lists secrets across eight namespaces and cluster-wide.
	evs = nil
	for i, ns := range []string{"web", "payments", "monitoring", "kube-system", "kube-public", "ci", "cert-manager", "default", ""} {
		evs = append(evs, g.request("erin-sre", "10.4.0.51", kubectl, action{verb: "list", resource: "secrets", namespace: ns}, at(1, 0).Add(time.Duration(i)*10*time.Second), 200))
	}
	add("secret-list-burst", "erin-sre", evs...)

	// Alice's grant was for payments; she uses it to change kube-system configuration.
	evs = nil
	for i := range 3 {
		e := g.request("alice@corp.example", "10.1.0.11", kubectl, action{verb: "update", resource: "configmaps", namespace: "kube-system"}, at(11, 20+i), 200)
		e.GrantIDs = []string{"ar-alice-db"}
		evs = append(evs, e)
	}
	add("grant-out-of-scope", "alice@corp.example", evs...)

	// Someone without credentials tries the API (the /version probe among them is not counted).
	evs = nil
	for i, p := range []string{"/api/v1/secrets", "/apis", "/api/v1/namespaces/kube-system/pods", "/api", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"} {
		e := g.base(at(12, 0).Add(time.Duration(i)*time.Second), "", "198.51.100.7", "curl/8.5.0")
		e.Verb, e.Method, e.RequestURI = "get", "GET", p
		e.SetResponse(401)
		evs = append(evs, e)
	}
	v := g.base(at(12, 1), "", "198.51.100.7", "curl/8.5.0")
	v.Verb, v.Method, v.RequestURI = "get", "GET", "/version"
	v.SetResponse(401)
	add("anonymous-request", "198.51.100.7", evs...)

	// Dave, from his usual address, sends headers that would make him someone else; the
	// gateway refuses each. A refusal for another reason is not smuggling and is not planted.
	evs = nil
	for i, h := range []string{"Impersonate-Group", "X-Remote-User", "Authorization", "Connection,Impersonate-User"} {
		e := g.request("dave.ops", "10.3.0.41", kubectl, action{verb: "list", resource: "secrets", namespace: "kube-system"}, at(12, 30+i), 400)
		e.Decision, e.RefusalReason = event.DecisionRefused, "identity_header"
		e.Extra = map[string]string{"refused_headers": h}
		evs = append(evs, e)
	}
	other := g.request("dave.ops", "10.3.0.41", kubectl, action{verb: "create", resource: "configmaps", namespace: "web"}, at(12, 40), 413)
	other.Decision, other.RefusalReason = event.DecisionRefused, "too_large"
	add("identity-smuggling", "dave.ops", evs...)

	// An old admin kubeconfig: root-admin changes things on the API server directly.
	evs = nil
	for i, ac := range []action{{verb: "patch", resource: "deployments", namespace: "web"}, {verb: "patch", resource: "deployments", namespace: "web"},
		{verb: "delete", resource: "configmaps", namespace: "web"}} {
		e := g.request("root-admin", "10.8.0.2", kubectl, ac, at(13, 5+i), 200)
		e.Source, e.Method = "apiserver", ""
		evs = append(evs, e)
	}
	add("gateway-bypass", "root-admin", evs...)

	// The CI deployer's token, copied out of the cluster, is used with curl from elsewhere.
	evs = nil
	for i := range 3 {
		e := g.request("system:serviceaccount:ci:deployer", "203.0.113.77", "curl/8.5.0", action{verb: "get", resource: "secrets", namespace: "web"}, at(14, 10+i), 200)
		e.Source, e.Method = "apiserver", ""
		evs = append(evs, e)
	}
	add("unknown-client", "system:serviceaccount:ci:deployer", evs...)

	// Bob tries images from registries a guardrail refuses, then a privileged pod. A single
	// refusal of Carol's (a typo) stays under the threshold and is not planted.
	evs = nil
	for i, pol := range []string{"kaccess-registries", "kaccess-registries", "kaccess-registries", "PodSecurity/baseline:latest"} {
		e := g.request("bob@corp.example", "10.2.0.21", kubectl, action{verb: "create", resource: "deployments", namespace: "web"}, at(15, 20+i), 403)
		e.Extra = map[string]string{"admission_policy": pol}
		evs = append(evs, e)
	}
	add("guardrail-violation-attempts", "bob@corp.example", evs...)
	typo := g.request("carol", "10.1.0.31", kubectl, action{verb: "create", resource: "deployments", namespace: "payments"}, at(10, 40), 403)
	typo.Extra = map[string]string{"admission_policy": "kaccess-registries"}
}
