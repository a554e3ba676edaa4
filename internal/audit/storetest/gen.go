package storetest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// baseTime is a fixed, microsecond-precise UTC time the generated events start from.
var baseTime = time.Date(2026, 11, 24, 9, 30, 15, 123456000, time.UTC)

var (
	users      = []string{"alice@corp.example", "bob@corp.example", "carol", "dave.ops", "erin-sre", "system:serviceaccount:ci:deployer"}
	verbs      = []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	resources  = []string{"pods", "deployments", "services", "configmaps", "secrets", "events", "nodes"}
	namespaces = []string{"default", "kube-system", "payments", "web", "monitoring", ""}
	agents     = []string{"kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", "k9s/v0.32.5", "Go-http-client/2.0", "helm/v3.16.2"}
)

// Realistic returns n request events of gateway gw with Seq firstSeq, firstSeq+1, ..., one
// every 500 ms from start, about 500 bytes each and without bodies: the common row.
// The same arguments give the same events, apart from their EventIDs.
func Realistic(gw string, firstSeq uint64, n int, start time.Time) []*event.Event {
	r := rand.New(rand.NewPCG(firstSeq, uint64(n)))
	out := make([]*event.Event, n)
	for i := range out {
		seq := firstSeq + uint64(i)
		pick := func(s []string) string { return s[r.IntN(len(s))] }
		e := event.New(event.KindRequest, start.Add(time.Duration(i)*500*time.Millisecond))
		e.GatewayInstance, e.Seq = gw, seq
		e.Cluster = "prod-eu-1"
		e.RequestID = fmt.Sprintf("req-%s-%08d", gw[:min(8, len(gw))], seq)
		e.User = pick(users)
		e.UID = fmt.Sprintf("uid-%04d", r.IntN(5000))
		e.Groups = []string{"ldap:corp:engineering", "ldap:corp:oncall", "system:authenticated"}[:1+r.IntN(3)]
		e.Source = "session"
		e.SessionIDHash = event.HashSessionID(fmt.Sprint(r.Uint64()))
		e.SourceIP = fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))
		e.UserAgent = pick(agents)
		e.Verb, e.Resource, e.Namespace = pick(verbs), pick(resources), pick(namespaces)
		e.APIVersion = "v1"
		if e.Resource == "deployments" {
			e.APIGroup = "apps"
		}
		e.Name = fmt.Sprintf("%s-%x", e.Resource, r.Uint32())
		e.RequestURI = fmt.Sprintf("/api/v1/namespaces/%s/%s/%s?timeout=32s", e.Namespace, e.Resource, e.Name)
		e.Method = "GET"
		e.SetResponse([]int{200, 200, 200, 201, 404, 403}[r.IntN(6)])
		e.Latency = time.Duration(r.IntN(50_000)) * time.Microsecond
		e.BytesIn, e.BytesOut = int64(r.IntN(2000)), int64(r.IntN(200_000))
		e.Level = event.Level("Metadata")
		out[i] = e
	}
	return out
}

// Varied returns events of gateway gw that probe the edges of each column: every field set,
// every field empty, unicode, control and NUL bytes, invalid UTF-8, long bodies, many groups,
// Extra maps, times far from now and in other zones, a long-running started/ended pair.
func Varied(gw string, firstSeq uint64) []*event.Event {
	var out []*event.Event
	add := func(e *event.Event) {
		e.GatewayInstance, e.Seq = gw, firstSeq+uint64(len(out))
		if e.EventID == "" {
			e.EventID = event.NewID()
		}
		out = append(out, e)
	}

	full := Realistic(gw, 0, 1, baseTime)[0]
	full.Kind = event.KindGrant
	full.ImpersonatedUser, full.ImpersonatedGroups = "system:admin", []string{"system:masters"}
	full.GrantIDs = []string{"grant-01", "grant-02"}
	full.Subresource = "status"
	full.Duration = 42 * time.Millisecond
	full.Level = event.Level("RequestResponse")
	full.RequestBody = json.RawMessage(`{"kind":"Pod","metadata":{"name":"web-0"}}`)
	full.ResponseBody = json.RawMessage(`{"kind":"Status","status":"Success"}`)
	full.Extra = map[string]string{"grant_id": "grant-01", "approver": "carol", "reason": "incident 4711"}
	add(full)

	// Every field empty but the ones a shipper always sets.
	add(&event.Event{Time: baseTime.Add(time.Second)})

	uni := Realistic(gw, 0, 1, baseTime.Add(2*time.Second))[0]
	uni.User, uni.UID = "zoë.müller@例え.jp", "ユーザー-1"
	uni.Groups = []string{"グループ", "équipe:sécurité", "🚀-launchers"}
	uni.Namespace, uni.Name = "prod", "naïve-pod-ß"
	uni.RequestBody = json.RawMessage(`{"note":"héllo 世界 🎉"}`)
	uni.Extra = map[string]string{"clé": "valeur ✓", "空": ""}
	add(uni)

	ctl := Realistic(gw, 0, 1, baseTime.Add(3*time.Second))[0]
	ctl.UserAgent = "evil\x00agent\r\n\t\"quoted\" \\back\\slash \x01\x1f\x7f"
	ctl.Name = "bad-utf8-\xff\xfe-\xc3"
	ctl.RequestURI = "/api/v1/namespaces/default/pods?labelSelector=a%3Db&x='y'"
	ctl.Extra = map[string]string{"": "empty key", "nul\x00key": "nul\x00value"}
	add(ctl)

	long := Realistic(gw, 0, 1, baseTime.Add(4*time.Second))[0]
	long.Level = event.Level("RequestResponse")
	long.RequestBody = json.RawMessage(`{"data":"` + strings.Repeat("a1b2c3d4", 32<<10) + `"}`)        // 256 KiB
	long.ResponseBody = json.RawMessage(`{"items":[` + strings.Repeat(`{"k":"v"},`, 100<<10) + `{}]}`) // ~1 MiB
	add(long)

	many := Realistic(gw, 0, 1, baseTime.Add(5*time.Second))[0]
	for i := range 500 {
		many.Groups = append(many.Groups, fmt.Sprintf("ldap:corp:team-%03d", i))
	}
	for i := range 100 {
		many.GrantIDs = append(many.GrantIDs, fmt.Sprintf("grant-%03d", i))
	}
	many.Extra = map[string]string{}
	for i := range 50 {
		many.Extra[fmt.Sprintf("key%02d", i)] = strings.Repeat("x", i)
	}
	add(many)

	// Times: not UTC on the way in (stored as the same instant), far past and far future,
	// the last microsecond of a day.
	berlin := time.FixedZone("CET", 3600)
	for _, tm := range []time.Time{
		baseTime.Add(6 * time.Second).In(berlin),
		time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(2200, 6, 1, 12, 0, 0, 0, time.UTC),
	} {
		e := Realistic(gw, 0, 1, tm)[0]
		e.Time = tm
		add(e)
	}

	// A long-running request: started when the response began, ended hours later.
	started := Realistic(gw, 0, 1, baseTime.Add(7*time.Second))[0]
	started.Verb, started.Resource, started.Subresource = "create", "pods", "exec"
	started.Stage, started.Latency = event.StageStarted, 3*time.Millisecond
	started.SetResponse(101)
	ended := *started
	ended.EventID = event.NewID()
	ended.Stage = event.StageEnded
	ended.Time = started.Time.Add(3*time.Hour + 17*time.Minute + 123456*time.Microsecond)
	ended.Duration = ended.Time.Sub(started.Time)
	ended.BytesIn, ended.BytesOut = 1<<20, 64<<20
	add(started)
	add(&ended)

	extreme := Realistic(gw, 0, 1, baseTime.Add(8*time.Second))[0]
	extreme.ResponseCode, extreme.Decision = 599, event.DecisionError
	extreme.BytesIn, extreme.BytesOut = math.MaxInt64, 0
	extreme.Latency, extreme.Duration = time.Duration(math.MaxInt64), 1
	add(extreme)

	return out
}
