// Package soak holds `make soak`: two gateway replicas under mixed traffic for a bounded time
// while their dependencies fail one after another, with a report of what was served, what
// was refused, and proof that no audit record was lost. It runs only when KACCESS_SOAK names a
// duration (make soak sets it; SOAK=60m for a longer run).
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

// Environment of `make soak`.
const (
	durationEnv = "KACCESS_SOAK"        // total duration, e.g. 10m
	reportEnv   = "KACCESS_SOAK_REPORT" // where the JSON report goes; default soak-report.json in the test's folder
)

// phase is one stretch of the soak: fault begins at its start, and end (if any) runs at its end.
type phase struct {
	name         string
	fault, clear func()
}

func TestSoak(t *testing.T) {
	total, err := time.ParseDuration(os.Getenv(durationEnv))
	if os.Getenv(durationEnv) == "" {
		t.Skipf("the soak runs with %s=<duration> (make soak)", durationEnv)
	}
	if err != nil || total < 2*time.Minute {
		t.Fatalf("%s=%q: want a duration of at least 2m, e.g. 10m", durationEnv, os.Getenv(durationEnv))
	}
	r := startRig(t)
	tr := &traffic{r: r, rec: &recorder{}, stop: make(chan struct{})}
	for _, u := range readerNames() {
		tok, err := tr.adLogin(u)
		must(t, err)
		tr.tokens = append(tr.tokens, tok)
	}
	tr.lead, err = tr.adLogin("soak-lead")
	must(t, err)
	if _, err := r.cluster.AdminClient().CoreV1().ConfigMaps(soakNamespace).Create(context.Background(),
		configMap("soak-fixed"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cluster.AdminClient().CoreV1().Secrets(soakNamespace).Create(context.Background(),
		secret("soak-secret"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rep := &report{Duration: total.String()}
	phases := r.phases(tr, rep)
	each := total / time.Duration(len(phases))
	rep.PhaseLength = each.Round(time.Second).String()
	tr.start()
	for i, p := range phases {
		tr.rec.phase.Store(int32(i))
		progress("phase %d/%d %s (%s)", i+1, len(phases), p.name, each.Round(time.Second))
		began := time.Now()
		if p.fault != nil {
			p.fault()
		}
		time.Sleep(time.Until(began.Add(each)))
		if p.clear != nil {
			p.clear()
		}
	}
	tr.Stop()
	progress("traffic stopped; waiting for the audit store to hold every answered request")
	names := make([]string, len(phases))
	for i, p := range phases {
		names[i] = p.name
	}
	rep.build(names, tr.rec.all())
	r.checkAudit(rep, tr.rec.all())

	path := os.Getenv(reportEnv)
	if path == "" {
		path = filepath.Join(r.dir, "soak-report.json")
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	must(t, os.WriteFile(path, append(data, '\n'), 0o644))
	fmt.Print(rep.table())
	fmt.Printf("report: %s\n", path)
	rep.check(t)
}

// phases are the scheduled faults, each with what it measures.
func (r *rig) phases(tr *traffic, rep *report) []phase {
	a, b := r.replicas[0], r.replicas[1]
	ctx := context.Background()
	var freeDisk func()
	return []phase{
		{name: "baseline"},
		{name: "ad-stopped", fault: func() { noted("stop samba", r.ad.StopServer()) }, clear: func() { must(r.t, r.ad.StartServer(ctx)) }},
		{name: "oidc-stopped", fault: func() { noted("stop the OpenID provider", r.idp.StopServer()) }, clear: func() { must(r.t, r.idp.StartServer(ctx)) }},
		{name: "clickhouse-stopped", fault: func() { noted("stop ClickHouse", r.ch.Stop()) }, clear: func() { must(r.t, r.ch.Start(ctx)) }},
		{name: "clickhouse-sigstopped", fault: func() { must(r.t, r.ch.Pause()) }, clear: func() { must(r.t, r.ch.Resume()) }},
		{name: "apiserver-restart", fault: func() {
			noted("stop kube-apiserver", r.cluster.StopAPIServer())
			// A replica that dies while its API server is away must come back without it.
			must(r.t, b.kill())
			rep.RestartWithoutAPIServer = r.start(b, false).Round(time.Millisecond).String()
			time.Sleep(5 * time.Second)
			must(r.t, r.cluster.StartAPIServer(ctx))
			if !b.waitReady(60 * time.Second) {
				r.t.Errorf("replica %s not ready 60 s after the API server came back", b.name)
			}
		}},
		{name: "replica-killed", fault: func() {
			rep.KillAt = time.Now()
			must(r.t, a.kill())
			time.Sleep(3 * time.Second)
			rep.Recovery.ReplicaRestart = r.start(a, true).Round(time.Millisecond).String()
		}},
		{name: "lease-lost", fault: func() { r.grantThroughControllerOutage(tr, rep) }, clear: func() {
			_ = r.cluster.AdminClient().CoordinationV1().Leases("kaccess-system").Delete(ctx, "kaccess-rbacsync", metav1.DeleteOptions{})
		}},
		{name: "spool-disk-full", fault: func() { freeDisk = testenv.FillDisk(r.t, b.spoolDir) }, clear: func() { freeDisk() }},
		{name: "clock-skew", fault: func() { go r.skewedClients(tr) }},
		{name: "recovery"},
	}
}

// noted reports how a stop went: a server that had to be killed after its grace period
// still went away, which is all a fault needs.
func noted(what string, err error) {
	if err != nil {
		progress("%s: %v", what, err)
	}
}

// grantThroughControllerOutage approves a short grant, waits until it works, then takes the
// controllers' Lease away (no replica leads: RBAC sync and grant expiry are down) and measures
// when access actually ends after the grant's expiry.
func (r *rig) grantThroughControllerOutage(tr *traffic, rep *report) {
	token := tr.tokens[readers-1] // no other elevation is asked for this user
	name, err := tr.elevate(0, token, "20s")
	if err != nil {
		r.t.Errorf("grant for the controller outage: %v", err)
		return
	}
	secret := "/api/v1/namespaces/" + soakNamespace + "/secrets/soak-secret"
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _ := tr.do("grant-probe", 0, "GET", secret, token, nil, true); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Errorf("the approved grant %s did not give access within 15 s", name)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, data := tr.do("elevation", 0, "GET", "/v1/accessrequests/"+name, token, nil, false)
	var got struct {
		AccessRequest map[string]any `json:"accessRequest"`
	}
	_ = json.Unmarshal(data, &got)
	exp, _ := got.AccessRequest["expireTime"].(string)
	expiry, err := time.Parse(time.RFC3339Nano, exp)
	if code != 200 || err != nil {
		r.t.Errorf("read grant %s: %d %s", name, code, data)
		return
	}
	ctx := context.Background()
	leases := r.cluster.AdminClient().CoordinationV1().Leases("kaccess-system")
	l, err := leases.Get(ctx, "kaccess-rbacsync", metav1.GetOptions{})
	if err != nil {
		r.t.Errorf("read the controllers' Lease: %v", err)
		return
	}
	l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To("soak-intruder"), LeaseDurationSeconds: ptr.To(int32(3600)),
		AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()}}
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		r.t.Errorf("take the Lease away: %v", err)
		return
	}
	progress("grant %s expires at %s; the controllers' Lease is held by soak-intruder", name, expiry.Format("15:04:05.000"))
	var lastOK, firstRefused time.Time
	for time.Now().Before(expiry.Add(10 * time.Second)) {
		code, _ := tr.do("grant-probe", 1, "GET", secret, token, nil, true)
		switch {
		case code == 200:
			lastOK = time.Now()
		case code == 403 && firstRefused.IsZero() && time.Now().After(expiry.Add(-time.Second)):
			firstRefused = time.Now()
		}
		if !firstRefused.IsZero() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.Grant = &grantReport{Request: name, ExpireTime: expiry, LastAllowed: lastOK, FirstRefused: firstRefused}
	if !firstRefused.IsZero() {
		rep.Grant.EndedAfterExpiry = firstRefused.Sub(expiry).Round(time.Millisecond).String()
		rep.Grant.endedAfter = firstRefused.Sub(expiry)
	}
}

// skewedClients sends requests to replica b with session tokens minted by a clock that runs
// ahead (b's clock is behind by that much): within the 30 s leeway they pass, beyond it they
// are refused as "not valid yet".
func (r *rig) skewedClients(tr *traffic) {
	time.Sleep(2 * time.Second) // the spool-disk-full phase just ended: let the spool recover
	for _, skew := range []time.Duration{30 * time.Second, 90 * time.Second} {
		clk := skewedClock{skew}
		m, err := session.NewManager(session.Config{Issuer: "kaccess", KeysDir: r.keysDir, Clock: clk})
		if err != nil {
			r.t.Errorf("minting with a skewed clock: %v", err)
			return
		}
		tok, _, err := m.Mint(context.Background(), session.Claims{User: "soak-user3", Groups: []string{"corp:soak-devs"}})
		if err != nil {
			r.t.Errorf("minting with a skewed clock: %v", err)
			return
		}
		class := fmt.Sprintf("skew-%ds", int(skew.Seconds()))
		for range 40 {
			tr.do(class, 1, "GET", "/api/v1/namespaces/"+soakNamespace+"/configmaps/soak-fixed", tok, nil, true)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// skewedClock is real time shifted by a constant.
type skewedClock struct{ skew time.Duration }

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.skew) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// checkAudit waits until the store holds every proxied request a client got an answer to,
// then counts: missing, stored more than once, sequence gaps per replica, and the spool-full
// refusals against the gap records that stand for them.
func (r *rig) checkAudit(rep *report, outs []outcome) {
	answered := map[string]string{} // request id: class
	fullSeen := 0
	for _, o := range outs {
		switch {
		case o.proxied && o.full:
			fullSeen++
		case o.proxied && o.code != 0 && o.id != "":
			answered[o.id] = o.class
			if o.class == "watch" && o.code == 200 {
				answered[o.id] = "stream"
			}
		}
	}
	// An ordinary request (a refused watch too) has one "complete" event; a watch that streamed
	// one "started" and one "ended".
	want := func(class string) map[string]int {
		if class == "stream" {
			return map[string]int{"started": 1, "ended": 1}
		}
		return map[string]int{"complete": 1}
	}
	table := r.db + ".audit_events"
	var stored map[string]map[string]int
	deadline := time.Now().Add(3 * time.Minute)
	missing := 0
	for {
		stored = map[string]map[string]int{}
		rows := r.query("SELECT request_id, stage, count() FROM " + table + " WHERE kind = 'request' GROUP BY request_id, stage FORMAT TSV")
		for i := 0; i+2 < len(rows); i += 3 {
			var n int
			fmt.Sscan(rows[i+2], &n)
			if stored[rows[i]] == nil {
				stored[rows[i]] = map[string]int{}
			}
			stored[rows[i]][rows[i+1]] = n
		}
		missing = 0
		for id, class := range answered {
			for stage := range want(class) {
				if stored[id][stage] == 0 {
					missing++
				}
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	a := &auditReport{Answered: len(answered), Missing: missing, RefusedSpoolFull: fullSeen}
	for id, class := range answered {
		once, twice := true, false
		for stage := range want(class) {
			once = once && stored[id][stage] == 1
			twice = twice || stored[id][stage] > 1
			if stored[id][stage] == 0 && len(a.MissingSamples) < 10 {
				a.MissingSamples = append(a.MissingSamples, class+" "+id+" "+stage)
			}
		}
		if once {
			a.StoredOnce++
		}
		if twice {
			a.StoredTwice++
		}
	}
	dup := r.query("SELECT count() - uniqExact(event_id) FROM " + table)
	if len(dup) == 1 {
		fmt.Sscan(dup[0], &a.DuplicateEvents)
	}
	rows := r.query("SELECT gateway_instance, max(seq), uniqExact(seq), max(seq) - min(seq) + 1 - uniqExact(seq) FROM " + table + " GROUP BY gateway_instance ORDER BY gateway_instance FORMAT TSV")
	for i := 0; i+3 < len(rows); i += 4 {
		var in instanceReport
		in.Instance = rows[i]
		fmt.Sscan(rows[i+1], &in.Produced)
		fmt.Sscan(rows[i+2], &in.Stored)
		fmt.Sscan(rows[i+3], &in.Gaps)
		a.Instances = append(a.Instances, in)
	}
	gap := r.query("SELECT sum(toUInt64OrZero(visitParamExtractString(extra, 'refused'))) FROM " + table + " WHERE kind = 'spool_full'")
	if len(gap) == 1 {
		fmt.Sscan(gap[0], &a.GapRecordsRefused)
	}
	rep.Audit = a
}

func configMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"soak": "fixed"}}
}

func secret(name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"soak": "secret"}}
}
