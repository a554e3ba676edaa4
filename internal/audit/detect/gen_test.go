package detect

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// The generated audit log: historyDays of ordinary work before the window, then the window
// day. Ordinary work is the same in both data sets; the planted one adds one case per
// detection inside the window.
var (
	windowFrom = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	windowTo   = windowFrom.Add(24 * time.Hour)
)

const historyDays = 14

// profile is how one identity works: when, from where, with what, on what.
type profile struct {
	user    string
	start   int // first working hour (UTC); with hours, may wrap past midnight
	hours   int // 24 for service accounts
	perDay  int
	ips     []string
	agents  []string
	actions []action
}

type action struct {
	verb, resource, subresource, namespace string
	weight                                 int
	impersonate                            string // kubectl --as, allowed
	roleRef                                string // bindings: "ClusterRole/view", "Role/app-reader"
}

const (
	kubectl = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
	k9s     = "k9s/v0.32.5"
	helm    = "helm/v3.16.2"
	goHTTP  = "Go-http-client/2.0"
	certMgr = "cert-manager-controller/v1.16.1"
)

func profiles() []profile {
	a := func(verb, resource, ns string, weight int) action {
		return action{verb: verb, resource: resource, namespace: ns, weight: weight}
	}
	return []profile{{
		user: "alice@corp.example", start: 8, hours: 9, perDay: 120,
		ips: []string{"10.1.0.11", "10.1.0.12"}, agents: []string{kubectl},
		actions: []action{
			a("get", "pods", "payments", 10), a("list", "pods", "payments", 8), a("get", "deployments", "payments", 5),
			a("patch", "deployments", "payments", 2), a("get", "secrets", "payments", 2), a("list", "pods", "web", 6),
			a("get", "configmaps", "web", 3), a("update", "configmaps", "web", 1), a("delete", "pods", "web", 1),
			{verb: "get", resource: "pods", namespace: "web", weight: 1, impersonate: "alice-test"},
		},
	}, {
		user: "bob@corp.example", start: 13, hours: 9, perDay: 100,
		ips: []string{"10.2.0.21"}, agents: []string{kubectl, k9s},
		actions: []action{
			a("list", "pods", "web", 10), a("get", "pods", "web", 8), a("watch", "pods", "web", 4), a("get", "services", "web", 3),
			a("list", "pods", "monitoring", 4), a("get", "configmaps", "monitoring", 2), a("delete", "pods", "web", 1),
			a("create", "deployments", "web", 1),
		},
	}, {
		user: "carol", start: 6, hours: 9, perDay: 80,
		ips: []string{"10.1.0.31", "10.1.0.32"}, agents: []string{kubectl},
		actions: []action{
			a("get", "pods", "payments", 10), a("list", "deployments", "payments", 6), a("get", "configmaps", "payments", 3),
			a("list", "events", "payments", 3),
		},
	}, {
		user: "dave.ops", start: 9, hours: 10, perDay: 100,
		ips: []string{"10.3.0.41"}, agents: []string{kubectl, k9s},
		actions: []action{
			a("list", "pods", "kube-system", 8), a("get", "pods", "kube-system", 6), a("list", "nodes", "", 4),
			a("get", "pods", "monitoring", 5), a("delete", "pods", "monitoring", 1),
			{verb: "create", resource: "pods", subresource: "exec", namespace: "monitoring", weight: 1},
			{verb: "get", resource: "pods", subresource: "log", namespace: "kube-system", weight: 3},
		},
	}, {
		// A night shift: hours wrap past midnight, and must not look unusual for her.
		user: "erin-sre", start: 22, hours: 8, perDay: 80,
		ips: []string{"10.4.0.51"}, agents: []string{kubectl},
		actions: []action{
			a("list", "pods", "monitoring", 8), a("get", "pods", "kube-system", 4), a("list", "events", "kube-system", 3),
			a("get", "configmaps", "monitoring", 2),
		},
	}, {
		user: "system:serviceaccount:ci:deployer", start: 0, hours: 24, perDay: 150,
		ips: []string{"10.9.0.5"}, agents: []string{helm, goHTTP},
		actions: []action{
			a("get", "deployments", "web", 8), a("patch", "deployments", "web", 4), a("update", "deployments", "payments", 3),
			a("get", "secrets", "web", 3), a("list", "secrets", "web", 1), a("get", "secrets", "payments", 2), a("delete", "pods", "web", 1),
			{verb: "create", resource: "rolebindings", namespace: "web", weight: 1, roleRef: "Role/app-reader"},
			{verb: "create", resource: "rolebindings", namespace: "payments", weight: 1, roleRef: "ClusterRole/view"},
		},
	}, {
		// A controller that watches secrets cluster-wide all day: normal for it, from history.
		user: "system:serviceaccount:cert-manager:cert-manager", start: 0, hours: 24, perDay: 48,
		ips: []string{"10.9.0.7"}, agents: []string{certMgr},
		actions: []action{
			a("watch", "secrets", "", 2), a("list", "secrets", "", 1), a("get", "secrets", "web", 2), a("get", "secrets", "payments", 2),
			a("update", "secrets", "web", 1),
		},
	}}
}

// scenario is a generated data set and, when planted, what each detection must find.
type scenario struct {
	events []*event.Event
	plants map[string][]plant // by detection name
	gen    *gen
}

// plant is one planted case: the finding must name subject and hold every id as evidence.
type plant struct {
	subject string
	ids     []string
}

// allPlanted returns the ids of every planted event.
func (s *scenario) allPlanted() map[string]bool {
	m := map[string]bool{}
	for _, ps := range s.plants {
		for _, p := range ps {
			for _, id := range p.ids {
				m[id] = true
			}
		}
	}
	return m
}

type gen struct {
	r      *rand.Rand
	seq    uint64
	events []*event.Event
}

// newScenario generates the ordinary work of historyDays days and the window day; with
// planted, one case per detection in the window.
func newScenario(planted bool) *scenario {
	g := &gen{r: rand.New(rand.NewPCG(20261120, 6))}
	profs := profiles()
	day0 := windowFrom.AddDate(0, 0, -historyDays)
	// On the first day every user does each of their actions from each of their addresses and
	// clients once, so nothing ordinary is "first seen" in the window by chance.
	for _, p := range profs {
		i := 0
		for _, ac := range p.actions {
			for _, ip := range p.ips {
				for _, ag := range p.agents {
					at := day0.Add(time.Duration(p.start)*time.Hour + time.Duration(i)*time.Minute)
					g.request(p.user, ip, ag, ac, at, 200)
					i++
				}
			}
		}
	}
	for d := range historyDays + 1 {
		day := day0.AddDate(0, 0, d)
		for _, p := range profs {
			g.workDay(p, day)
		}
		g.health(day)
		g.ciRoutine(day, d)
	}
	g.grant(windowFrom.Add(9*time.Hour), "ar-alice-db", "alice@corp.example", "payments")
	// Alice uses her grant within its scope: new for her, but asked for.
	for i := range 3 {
		e := g.request("alice@corp.example", "10.1.0.11", kubectl, action{verb: "delete", resource: "secrets", namespace: "payments"},
			windowFrom.Add(9*time.Hour+30*time.Minute+time.Duration(i)*time.Minute), 200)
		e.GrantIDs = []string{"ar-alice-db"}
	}
	s := &scenario{gen: g, plants: map[string][]plant{}}
	if planted {
		s.plant()
	}
	g.gatewayRefusals()
	g.apiServerView()
	s.events = g.events
	return s
}

// gatewayRefusals is, in both data sets, what the gateway refused before it reached the API
// server: Bob, with a grant scoped to demo, asks for secrets in kube-system and across many
// namespaces, and the gateway answers each itself. None of it is access, so the detections
// that speak of reading secrets or using a grant must stay silent on the clean set. (Added
// last, so the random stream of everything before stays as it was.)
func (g *gen) gatewayRefusals() {
	at := windowFrom.Add(14 * time.Hour)
	g.grant(at, "ar-bob-demo", "bob@corp.example", "demo")
	refuse := func(e *event.Event, code int, reason string) {
		e.ResponseCode, e.Decision, e.RefusalReason = code, event.DecisionRefused, reason
		e.GrantIDs = []string{"ar-bob-demo"}
	}
	reasons := []struct {
		code   int
		reason string
	}{{400, "bad_request"}, {413, "too_large"}, {502, "upstream_unavailable"}, {429, "rate_limited"}}
	for i := range 8 {
		e := g.request("bob@corp.example", "10.2.0.21", kubectl, action{verb: "get", resource: "secrets", namespace: "kube-system"},
			at.Add(time.Duration(i+1)*time.Minute), 200)
		refuse(e, reasons[i%len(reasons)].code, reasons[i%len(reasons)].reason)
	}
	for i, ns := range []string{"web", "payments", "monitoring", "kube-system", "kube-public", "ci", "cert-manager", "default", ""} {
		e := g.request("bob@corp.example", "10.2.0.21", kubectl, action{verb: "list", resource: "secrets", namespace: ns},
			at.Add(10*time.Minute+time.Duration(i)*10*time.Second), 200)
		refuse(e, 400, "bad_request")
	}
}

// apiServerView is, in both data sets, what the API server's own audit webhook adds in the
// window: the gateway's own calls (marked by the receiver), controllers, and a copy of a
// request the gateway forwarded (same request id). None of it is anyone going around the
// gateway, and no service account in it is used from anywhere new.
func (g *gen) apiServerView() {
	at := windowFrom.Add(15 * time.Hour)
	view := func(e *event.Event) *event.Event {
		e.Source, e.Method = "apiserver", ""
		return e
	}
	for i := range 10 {
		e := view(g.request("kaccess-gateway", "10.0.0.40", "kaccess-gateway/dev", action{verb: "update", resource: "leases", namespace: "kaccess-system"},
			at.Add(time.Duration(i)*2*time.Second), 200))
		e.Extra = map[string]string{"kaccess.io/gateway-own": "true"}
	}
	for i := range 5 {
		view(g.request("system:serviceaccount:kube-system:replicaset-controller", "10.0.0.1", "kube-controller-manager/v1.37.2",
			action{verb: "create", resource: "pods", namespace: "web"}, at.Add(time.Duration(i)*time.Second), 201))
		view(g.request("system:serviceaccount:ci:deployer", "10.9.0.5", helm, action{verb: "get", resource: "deployments", namespace: "web"},
			at.Add(time.Duration(i)*time.Second), 200))
	}
	// Bob through the gateway, and the API server's copy of the same request.
	fwd := g.request("bob@corp.example", "10.2.0.21", kubectl, action{verb: "list", resource: "pods", namespace: "web"}, at.Add(time.Minute), 200)
	cp := *fwd
	g.seq++
	cp.EventID, cp.Seq, cp.Source, cp.SourceIP = event.NewID(), g.seq, "apiserver", "10.2.0.21"
	g.events = append(g.events, &cp)
}

// workDay is one day of p's ordinary work, at random moments within their hours.
func (g *gen) workDay(p profile, day time.Time) {
	total := 0
	for _, ac := range p.actions {
		total += ac.weight
	}
	for range p.perDay {
		h := (p.start + g.r.IntN(p.hours)) % 24
		at := day.Add(time.Duration(h)*time.Hour + time.Duration(g.r.IntN(3600_000_000))*time.Microsecond)
		n := g.r.IntN(total)
		ac := p.actions[0]
		for _, c := range p.actions {
			if n < c.weight {
				ac = c
				break
			}
			n -= c.weight
		}
		code := 200
		if g.r.IntN(50) == 0 { // the odd refusal everyone gets
			code = 403
		}
		e := g.request(p.user, p.ips[g.r.IntN(len(p.ips))], p.agents[g.r.IntN(len(p.agents))], ac, at, code)
		if p.user == "alice@corp.example" && !at.Before(windowFrom.Add(9*time.Hour)) && at.Before(windowFrom.Add(13*time.Hour)) {
			e.GrantIDs = []string{"ar-alice-db"}
		}
	}
}

// health is a load balancer probing the gateway without credentials every 10 minutes; some
// probes are refused (401), which must not count as anonymous attempts.
func (g *gen) health(day time.Time) {
	paths := []string{"/healthz", "/readyz?verbose", "/livez", "/version", "/readyz/ping"}
	for i := range 144 {
		e := g.base(day.Add(time.Duration(i)*10*time.Minute), "", "10.0.0.2", "kube-probe/1.31")
		e.Verb, e.Method = "get", "GET"
		e.RequestURI = paths[i%len(paths)]
		e.SetResponse([]int{200, 401}[i%2])
	}
}

// ciRoutine: the CI deployer's nightly cleanup deletes a few dozen pods in one go and runs
// into a burst of 403s probing for optional resources. Its busiest night (40 deletes) is in
// the history, so the window's 30 are its normal.
func (g *gen) ciRoutine(day time.Time, d int) {
	const ci = "system:serviceaccount:ci:deployer"
	deletes := 20 + d%3*5
	if d == 3 {
		deletes = 40
	}
	if d == historyDays {
		deletes = 30
	}
	for i := range deletes {
		g.request(ci, "10.9.0.5", helm, action{verb: "delete", resource: "pods", namespace: "web"}, day.Add(3*time.Hour+time.Duration(i)*5*time.Second), 200)
	}
	for i := range 25 {
		g.request(ci, "10.9.0.5", helm, action{verb: "get", resource: "customresourcedefinitions", namespace: ""},
			day.Add(3*time.Hour+10*time.Minute+time.Duration(i)*4*time.Second), 403)
	}
}

// grant records a grant starting at at for user, scoped to namespaces, with the Extra keys
// the grant-out-of-scope detection reads.
func (g *gen) grant(at time.Time, id, user, namespaces string) *event.Event {
	e := g.base(at, "dave.ops", "10.3.0.41", "kaccess/v0.1")
	e.Kind, e.Source = event.KindGrant, "kaccess"
	e.APIGroup, e.Resource, e.Namespace, e.Name = "kaccess.io", "accessrequests", "kaccess-system", id
	e.GrantIDs = []string{id}
	e.Decision = event.DecisionAllow
	e.Extra = map[string]string{"grant_id": id, "namespaces": namespaces, "cluster_wide": "false", "requester": user, "role": "ClusterRole/edit"}
	return e
}

// base is an event with the fields every event has.
func (g *gen) base(at time.Time, user, ip, agent string) *event.Event {
	g.seq++
	e := event.New(event.KindRequest, at)
	e.Cluster, e.GatewayInstance, e.Seq = "prod-eu-1", "gw-1", g.seq
	e.RequestID = fmt.Sprintf("req-%08d", g.seq)
	e.User, e.SourceIP, e.UserAgent = user, ip, agent
	if user != "" {
		e.Source = "session"
		e.Groups = []string{"system:authenticated"}
	}
	e.Level = "Metadata"
	g.events = append(g.events, e)
	return e
}

// request is one request of ac by user at at, answered with code.
func (g *gen) request(user, ip, agent string, ac action, at time.Time, code int) *event.Event {
	e := g.base(at, user, ip, agent)
	e.Verb, e.Resource, e.Subresource, e.Namespace = ac.verb, ac.resource, ac.subresource, ac.namespace
	e.APIVersion = "v1"
	switch ac.resource {
	case "deployments":
		e.APIGroup = "apps"
	case "rolebindings", "clusterrolebindings":
		e.APIGroup = "rbac.authorization.k8s.io"
	}
	if ac.verb == "get" || ac.verb == "delete" || ac.verb == "update" || ac.verb == "patch" || ac.subresource != "" {
		e.Name = fmt.Sprintf("%s-%04x", strings.TrimSuffix(ac.resource, "s"), g.r.IntN(1<<16))
	}
	e.Method = map[string]string{"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT",
		"patch": "PATCH", "delete": "DELETE", "deletecollection": "DELETE"}[ac.verb]
	e.RequestURI = uri(e)
	e.ImpersonatedUser = ac.impersonate
	if ac.roleRef != "" {
		kind, name, _ := strings.Cut(ac.roleRef, "/")
		e.Name = "rb-" + strings.ToLower(name)
		e.Level = "RequestResponse"
		e.RequestBody = binding(e.Name, e.Namespace, kind, name, "ServiceAccount", "app")
	}
	e.SetResponse(code)
	e.Latency = time.Duration(1+g.r.IntN(40)) * time.Millisecond
	return e
}

func uri(e *event.Event) string {
	p := "/api/v1"
	if e.APIGroup != "" {
		p = "/apis/" + e.APIGroup + "/v1"
	}
	if e.Namespace != "" {
		p += "/namespaces/" + e.Namespace
	}
	p += "/" + e.Resource
	if e.Name != "" {
		p += "/" + e.Name
	}
	if e.Subresource != "" {
		p += "/" + e.Subresource
	}
	if e.Verb == "watch" {
		p += "?watch=true"
	}
	return p
}

// binding is the JSON of a RoleBinding (namespace set) or ClusterRoleBinding.
func binding(name, namespace, roleKind, role, subjectKind, subject string) json.RawMessage {
	kind := "RoleBinding"
	if namespace == "" {
		kind = "ClusterRoleBinding"
	}
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": roleKind, "name": role},
		"subjects": []map[string]any{{"kind": subjectKind, "name": subject}},
	})
	return b
}
