package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/ship"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/gateway"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

// dashboard is what the tests read of a Grafana dashboard JSON.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    map[string]int `json:"gridPos"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"` // a collapsed row's
}

type target struct {
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
	Expr       string         `json:"expr"`   // Prometheus
	RawSQL     string         `json:"rawSql"` // ClickHouse
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

// queryText is a query variable's query: a string, or {"query": "..."} (Prometheus).
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &q)
	return q.Query
}

func loadDashboard(t *testing.T, name string) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("grafana", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: not JSON: %v", name, err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

var dashboards = map[string]string{ // file -> datasource plugin of its queries
	"kaccess-gateway.json": "prometheus",
	"kaccess-audit.json":   "grafana-clickhouse-datasource",
}

// Both dashboards have a uid and a title, panels with unique ids, and every panel and query
// names its datasource through a datasource variable of the dashboard (so an import asks which
// Prometheus or ClickHouse to use instead of pointing at a uid of someone else's Grafana).
func TestDashboardsAreWellFormed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("grafana", "*.json"))
	if err != nil || len(files) != len(dashboards) {
		t.Fatalf("grafana/*.json: %v %v, want the %d dashboards this test knows", files, err, len(dashboards))
	}
	uids := map[string]string{}
	for file, plugin := range dashboards {
		d := loadDashboard(t, file)
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q", file, d.UID, d.Title)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share uid %s", file, other, d.UID)
		}
		uids[d.UID] = file
		dsVars := map[string]bool{}
		for _, v := range d.Templating.List {
			if v.Type == "datasource" {
				var q string
				_ = json.Unmarshal(v.Query, &q)
				if q != plugin {
					t.Errorf("%s: datasource variable %s is for %q, want %q", file, v.Name, q, plugin)
				}
				dsVars["${"+v.Name+"}"] = true
			}
		}
		checkRef := func(where string, ref *datasourceRef) {
			if ref == nil || !dsVars[ref.UID] || ref.Type != plugin {
				t.Errorf("%s: %s: datasource %+v, want type %s and a uid that is a datasource variable (%v)", file, where, ref, plugin, dsVars)
			}
		}
		ids := map[int]bool{}
		queries := 0
		for _, p := range d.allPanels() {
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: panel %q: id %d missing or not unique", file, p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" || p.Type == "" || p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
				t.Errorf("%s: panel %d: title %q, type %q, gridPos %v", file, p.ID, p.Title, p.Type, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			checkRef(fmt.Sprintf("panel %q", p.Title), p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				checkRef(fmt.Sprintf("panel %q query %s", p.Title, tg.RefID), tg.Datasource)
				if tg.Expr == "" && tg.RawSQL == "" {
					t.Errorf("%s: panel %q query %s is empty", file, p.Title, tg.RefID)
				}
				queries++
			}
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				checkRef("variable "+v.Name, v.Datasource)
			}
		}
		if queries < 10 {
			t.Errorf("%s: %d queries; the dashboard lost its panels?", file, queries)
		}
	}
}

// grafanaVars replaces the dashboard variables and Grafana's own interval variables the way
// Grafana would before sending a query.
func grafanaVars(q string, vars map[string]string) string {
	pairs := []string{"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h"}
	for name, v := range vars {
		pairs = append(pairs, "${"+name+"}", v, "$"+name, v)
	}
	return strings.NewReplacer(pairs...).Replace(q)
}

var promMetricName = regexp.MustCompile(`\b(?:kaccess|go|process)_[a-zA-Z0-9_:]*`)

// Every PromQL expression of the gateway dashboard parses (promtool checks them as recording
// rules) and uses only metrics a real gateway serves on /metrics; the alert rules too.
func TestGatewayDashboardQueriesParseAndUseExportedMetrics(t *testing.T) {
	d := loadDashboard(t, "kaccess-gateway.json")
	exprs := map[string]string{} // where -> expression
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = grafanaVars(tg.Expr, map[string]string{"instance": ".*", "cluster": ".*"})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*), *[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.queryText())
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, v.queryText())
			continue
		}
		exprs["variable "+v.Name] = m[1]
	}

	// promtool parses them as recording rules of one group.
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var wheres []string
	for where := range exprs {
		wheres = append(wheres, where)
	}
	slices.Sort(wheres)
	for i, where := range wheres {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: exprs[where]})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(testenv.ToolBinary(t, "promtool"), "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s\n(query_N is the Nth of %q)", err, out, wheres)
	}

	exported := gatewayMetricNames(t)
	rulesFile, err := os.ReadFile(filepath.Join("prometheus", "kaccess-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	exprs["the alert rules"] = string(rulesFile)
	for _, where := range append(wheres, "the alert rules") {
		for _, name := range promMetricName.FindAllString(exprs[where], -1) {
			if !exported[name] {
				t.Errorf("%s uses %s, which the gateway does not export", where, name)
			}
		}
	}
}

// gatewayMetricNames runs a real gateway with every optional part whose series the deploy
// files use (a login source, the API servers' audit webhook), makes a request, and returns the
// metric names its /metrics serves (histograms with their _bucket, _sum and _count).
func gatewayMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	c := testenv.Shared(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "webhook-token")
	if err := os.WriteFile(tokenFile, []byte(strings.Repeat("w", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Listen:   config.Listen{Address: "127.0.0.1:0", OpsAddress: "127.0.0.1:0"},
		StateDir: dir,
		Clusters: []config.Cluster{{Name: "test", Server: c.URL, CAFile: c.CAFile, TokenFile: c.GatewayTokenFile}},
	}
	cfg.Audit.Webhook.TokenFile = tokenFile
	// An access policy, so the leader's RBAC sync exports its per-cluster series too.
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Access.PolicyFile = policyFile
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	never := func(ctx context.Context) (ship.Sink, error) { <-ctx.Done(); return nil, ctx.Err() }
	corp := apiserver.Source{Type: "ldap", Passwords: authn.PasswordFunc(func(context.Context, string, string) (*authn.Identity, error) {
		return nil, authn.ErrInvalidCredentials
	})}
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), gateway.WithAuditStore(never), gateway.WithPasswordSource("corp", corp))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	token, _, err := g.Sessions().Mint(context.Background(), session.Claims{User: "dora", Groups: []string{"g"}, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+g.Addr()+"/api/v1/namespaces", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(g.CAPEM) {
		t.Fatal("the gateway made no CA")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// The sync series appear once this replica leads and ran a pass: scrape until they do.
	var names map[string]bool
	for deadline := time.Now().Add(30 * time.Second); ; {
		names = scrapeMetricNames(t, "http://"+g.OpsAddr()+"/metrics")
		if names["kaccess_rbacsync_cluster_up"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !names["kaccess_requests_total"] || !names["kaccess_logins_total"] || !names["kaccess_audit_webhook_events_total"] || !names["kaccess_rbacsync_cluster_up"] {
		t.Fatalf("the gateway's /metrics lacks series the test made sure of: %v", names)
	}
	return names
}

// scrapeMetricNames returns the metric names a /metrics page declares (with a histogram's
// and summary's series).
func scrapeMetricNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" || f[3] == "summary" {
				names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
				if f[3] == "histogram" {
					names[f[2]+"_bucket"] = true
				}
			}
		}
	}
	return names
}

// clickhouseMacros expands the grafana-clickhouse-datasource macros the audit dashboard uses,
// as the plugin does, for a time range of from..to.
func clickhouseMacros(q string, from, to time.Time) string {
	call := regexp.MustCompile(`\$__(timeFilter|timeInterval|dateFilter)\(([a-zA-Z_][a-zA-Z0-9_]*)\)`)
	q = call.ReplaceAllStringFunc(q, func(m string) string {
		s := call.FindStringSubmatch(m)
		switch col := s[2]; s[1] {
		case "timeFilter":
			return fmt.Sprintf("%s >= toDateTime(%d) AND %s <= toDateTime(%d)", col, from.Unix(), col, to.Unix())
		case "timeInterval":
			return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL 60 second)", col)
		default:
			return fmt.Sprintf("%s >= toDate('%s') AND %s <= toDate('%s')", col, from.Format(time.DateOnly), col, to.Format(time.DateOnly))
		}
	})
	return strings.NewReplacer("$__fromTime", fmt.Sprintf("toDateTime(%d)", from.Unix()),
		"$__toTime", fmt.Sprintf("toDateTime(%d)", to.Unix()), "$__interval_s", "60").Replace(q)
}

// Every SQL query of the audit dashboard runs on the real embedded store (chDB with the real
// schema migrations) and returns rows for planted activity, with the cluster variable on All
// and on one cluster: a renamed column or a changed event kind breaks it.
func TestAuditDashboardQueriesRunOnTheRealStore(t *testing.T) {
	lib, helper := testenv.ChDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	store, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	now := time.Now().UTC()
	at := now.Add(-10 * time.Minute)
	var events []*event.Event
	add := func(kind event.Kind, f func(e *event.Event)) {
		e := event.New(kind, at)
		e.Cluster, e.GatewayInstance, e.Seq = "prod", "gw-1", uint64(len(events)+1)
		f(e)
		events = append(events, e)
	}
	for _, r := range []struct {
		user, verb, resource string
		code                 int
		decision             event.Decision
		reason               string
	}{
		{"alice", "list", "pods", 200, event.DecisionAllow, ""},
		{"alice", "get", "secrets", 403, event.DecisionDeny, ""},
		{"bob", "create", "pods", 503, event.DecisionRefused, "audit_spool_full"},
	} {
		add(event.KindRequest, func(e *event.Event) {
			e.User, e.Verb, e.Resource, e.Namespace, e.ResponseCode, e.Decision, e.RefusalReason =
				r.user, r.verb, r.resource, "team-a", r.code, r.decision, r.reason
		})
	}
	add(event.KindLogin, func(e *event.Event) { e.User = "alice" })
	add(event.KindLoginFailed, func(e *event.Event) {
		e.User = "mallory"
		e.Extra = map[string]string{"outcome": "invalid_credentials"}
	})
	grant := func(kind event.Kind, id string, expires time.Time) {
		add(kind, func(e *event.Event) {
			e.User = "rita"
			e.Extra = map[string]string{"grant_id": id, "requester": "alice", "elevation": "debug-prod", "role": "ClusterRole/edit",
				"namespaces": "team-a", "expires_at": expires.Format(time.RFC3339)}
		})
	}
	grant(event.KindGrant, "ar-in-force", now.Add(time.Hour))
	grant(event.KindGrant, "ar-revoked", now.Add(time.Hour))
	grant(event.KindGrantRevoked, "ar-revoked", now.Add(time.Hour))
	grant(event.KindGrant, "ar-expired", now.Add(-time.Minute))
	add(event.KindSpoolFull, func(e *event.Event) { e.Extra = map[string]string{"refused": "12"} })
	// A scheduled detection's finding changing state, as internal/audit/findings records it.
	add(event.KindFinding, func(e *event.Event) {
		e.Verb, e.Name = "firing", "fp-1"
		e.Extra = map[string]string{"detection": "secret-read-burst", "severity": "high", "subject": "alice", "summary": "12 secrets in 5 minutes"}
	})
	if err := store.Write(ctx, "dashboard-test", events); err != nil {
		t.Fatal(err)
	}

	d := loadDashboard(t, "kaccess-audit.json")
	var queries []struct{ where, sql string }
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			queries = append(queries, struct{ where, sql string }{fmt.Sprintf("panel %q %s", p.Title, tg.RefID), tg.RawSQL})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			queries = append(queries, struct{ where, sql string }{"variable " + v.Name, v.queryText()})
		}
	}
	for _, q := range queries {
		for _, cluster := range []string{"All", "prod"} {
			sql := grafanaVars(clickhouseMacros(q.sql, now.Add(-time.Hour), now.Add(time.Minute)),
				map[string]string{"database": "kaccess", "cluster": cluster})
			if strings.Contains(sql, "$") {
				t.Errorf("%s: a macro or variable the test does not know is left: %s", q.where, sql)
				continue
			}
			out, err := store.Query(ctx, sql, "JSONEachRow")
			if err != nil {
				t.Errorf("%s (cluster %s) does not run: %v\n%s", q.where, cluster, err, sql)
				continue
			}
			if rows := bytes.Count(out, []byte("\n")); rows == 0 {
				t.Errorf("%s (cluster %s) returns no rows for the planted activity:\n%s", q.where, cluster, sql)
			}
			// The planted events fill every field the panels show: an empty text is a map key
			// (extra['...']) that the gateway does not write.
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var row map[string]any
				if err := json.Unmarshal([]byte(line), &row); err != nil {
					t.Fatalf("%s: row %s: %v", q.where, line, err)
				}
				for col, v := range row {
					if v == "" {
						t.Errorf("%s (cluster %s): column %s is empty in %s", q.where, cluster, col, line)
					}
				}
			}
		}
	}
	// The grants panel shows the grant in force only: not the revoked one, not the expired one.
	for _, p := range d.allPanels() {
		if p.Title != "Grants in force" {
			continue
		}
		sql := grafanaVars(clickhouseMacros(p.Targets[0].RawSQL, now.Add(-time.Hour), now), map[string]string{"database": "kaccess"})
		out, err := store.Query(ctx, sql, "JSONEachRow")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); !strings.Contains(got, `"ar-in-force"`) || strings.Count(got, "\n") != 0 {
			t.Errorf("grants in force: %s, want only ar-in-force", got)
		}
	}
}
