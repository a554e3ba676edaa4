package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/config"
)

// scrape returns the gateway's series as "name{labels}" -> value.
func scrape(t *testing.T, g *testGateway) map[string]float64 {
	t.Helper()
	resp, err := http.Get(g.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// The series the health alerts of deploy/prometheus watch follow the state they report: the
// store going down and coming back (kaccess_audit_store_up, the shipper's last success), logins
// by source and outcome, and the serving certificate's expiry.
func TestHealthMetricsFollowTheirState(t *testing.T) {
	open, _ := embeddedStore(t)
	var down atomic.Bool
	down.Store(true)
	flaky := func(ctx context.Context) (ship.Sink, error) {
		if down.Load() {
			return nil, errors.New("connection refused (the test's outage)")
		}
		return open(ctx)
	}
	started := time.Now()
	g := startGateway(t, func(c *config.Config) { c.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond) },
		WithAuditStore(flaky), WithPasswordSource("corp", passwords(map[string]string{"alice": "s3cret!"}, nil)))

	// Store down: requests are spooled, the store is not up, nothing shipped since the start.
	token := g.mint(t, "hana")
	for range 3 {
		requestID(t, g, "GET", "/api/v1/namespaces", token)
	}
	m := scrape(t, g)
	if m["kaccess_audit_store_up"] != 0 || m["kaccess_audit_spool_pending_records"] < 3 {
		t.Fatalf("store down: store_up %v, pending %v", m["kaccess_audit_store_up"], m["kaccess_audit_spool_pending_records"])
	}
	last := m["kaccess_audit_ship_last_success_timestamp_seconds"]
	if last < float64(started.Unix()-1) || last > float64(time.Now().Unix()+1) {
		t.Fatalf("last success %v: want the shipper's start (about %d)", last, started.Unix())
	}

	// Store back: up, spool drained, last success moved on.
	time.Sleep(1100 * time.Millisecond) // so the timestamp visibly advances
	down.Store(false)
	waitFor(t, func() bool {
		m = scrape(t, g)
		return m["kaccess_audit_store_up"] == 1 && m["kaccess_audit_spool_pending_records"] == 0
	})
	if got := m["kaccess_audit_ship_last_success_timestamp_seconds"]; got < last+1 {
		t.Fatalf("last success %v after the store came back, was %v", got, last)
	}

	// Logins: one wrong password, one success, by source and outcome.
	client := g.httpClient()
	for _, pw := range []string{"wrong", "s3cret!"} {
		body := fmt.Sprintf(`{"source":"corp","username":"alice","password":%q}`, pw)
		resp, err := client.Post(g.URL+"/v1/auth:login", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	m = scrape(t, g)
	for series, want := range map[string]float64{
		`kaccess_logins_total{outcome="invalid_credentials",source="corp"}`: 1,
		`kaccess_logins_total{outcome="success",source="corp"}`:             1,
	} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}

	// The certificate expiry is the one a client sees in the handshake.
	conn, err := tls.Dial("tcp", g.Addr(), &tls.Config{InsecureSkipVerify: true}) // only the served certificate is read
	if err != nil {
		t.Fatal(err)
	}
	notAfter := conn.ConnectionState().PeerCertificates[0].NotAfter
	conn.Close()
	if got := m["kaccess_tls_certificate_expiry_timestamp_seconds"]; got != float64(notAfter.Unix()) {
		t.Errorf("certificate expiry %v, want %d (%s)", got, notAfter.Unix(), notAfter)
	}
}
