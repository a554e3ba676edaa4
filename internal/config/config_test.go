package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
stateDir: /tmp/k
clusters:
  - name: dev
    kubeconfig: /etc/kaccess/dev.kubeconfig
  - name: prod
    server: https://prod.example.com:6443
    tokenFile: /var/run/token
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DefaultCluster().Name; got != "dev" {
		t.Errorf("default cluster = %q, want the first one, dev", got)
	}
	if c.Session.KeysDir != "/tmp/k/session-keys" {
		t.Errorf("session.keysDir = %q, want it under stateDir", c.Session.KeysDir)
	}
	if c.Timeouts.Request.D() != time.Minute || c.Session.TTL.D() != 8*time.Hour {
		t.Errorf("timeouts.request = %s, session.ttl = %s", c.Timeouts.Request.D(), c.Session.TTL.D())
	}
	if c.Limits.MaxBodyBytes != 3<<20 {
		t.Errorf("limits.maxBodyBytes = %d", c.Limits.MaxBodyBytes)
	}
}

func TestParseListsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
listen:
  address: "6443"
  opsAddress: ":9090"
tls:
  certFile: /only/cert.pem
clusters:
  - name: Prod_1
    server: http://insecure:6443
    tokenFile: /t
    inCluster: true
  - name: b
    context: x
  - name: b
    kubeconfig: /k
    default: true
  - name: c
    kubeconfig: /k
    default: true
session:
  ttl: 72h
trustedProxies: [10.0.0.0/33]
log:
  level: loud
timeouts:
  request: -1s
`))
	v, ok := AsValidationError(err)
	if !ok {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	want := []string{
		"clusters: only one cluster may be default",
		"clusters[0].name: must be a DNS label",
		"clusters[0].server: must be an https:// URL",
		"clusters[0]: set only one credential source",
		"clusters[1]: set one credential source",
		"clusters[1].context: only meaningful with kubeconfig",
		"clusters[2].name: \"b\" is already used by clusters[1]",
		"listen.address: must be host:port",
		"log.level: must be one of",
		"session.ttl: must be between 1m and 24h",
		"timeouts.request: must not be negative",
		"tls: set both certFile and keyFile",
		"trustedProxies[0]: not a CIDR",
	}
	msg := v.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("report lacks %q:\n%s", w, msg)
		}
	}
	if len(v.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(v.Problems), len(want), msg)
	}
}

func TestParseRejectsUnknownFieldsAndBadDurations(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"unknown field":   "clusterz: []",
		"number duration": "session: {ttl: 3600}",
		"bad unit":        "session: {ttl: 8hours}",
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		} else if _, isValidation := AsValidationError(err); isValidation {
			t.Errorf("%s: want a decode error, got %v", name, err)
		}
	}
}

func TestDirectoriesAreValidatedWithTheirPaths(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
clusters: [{name: c, inCluster: true}]
directories:
  - name: corp
    type: activedirectory
    urls: ["ldap://dc.corp.example.com"]
    bindDN: svc
    userBaseDN: DC=corp,DC=example,DC=com
  - name: Corp
    type: novell
`))
	v, ok := AsValidationError(err)
	if !ok {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	msg := v.Error()
	for _, want := range []string{"directories[0].", "directories[1].name: must be lowercase", "directories[1].type"} {
		if !strings.Contains(msg, want) {
			t.Errorf("report lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "directories[0].name") {
		t.Errorf("a valid name was reported:\n%s", msg)
	}
}

func TestMeasurementSwitches(t *testing.T) {
	t.Parallel()
	base := "stateDir: /tmp/k\nclusters: [{name: a, server: \"https://a:6443\", tokenFile: /t}]\n"
	c, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Audit.RecordsRequests() || c.Listen.Pprof {
		t.Errorf("defaults: recordRequests %v, pprof %v; want requests recorded and no profiles", c.Audit.RecordsRequests(), c.Listen.Pprof)
	}
	c, err = Parse([]byte(base + "listen: {opsAddress: \":9090\", pprof: true}\naudit: {recordRequests: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit.RecordsRequests() || !c.Listen.Pprof {
		t.Errorf("recordRequests %v, pprof %v; want what the file says", c.Audit.RecordsRequests(), c.Listen.Pprof)
	}
	_, err = Parse([]byte(base + "listen: {pprof: true}\naudit: {recordRequests: false, strict: true}\n"))
	v, ok := AsValidationError(err)
	if !ok {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	for _, w := range []string{"listen.pprof: needs listen.opsAddress", "audit.strict: has no effect with audit.recordRequests: false"} {
		if !strings.Contains(v.Error(), w) {
			t.Errorf("report lacks %q:\n%s", w, v.Error())
		}
	}
}

func TestClusterLabels(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
clusters:
  - name: prod
    kubeconfig: /k
    labels: {env: prod, kaccess.io/region: eu}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Clusters[0].Labels["kaccess.io/region"]; got != "eu" {
		t.Errorf("labels = %v", c.Clusters[0].Labels)
	}
	_, err = Parse([]byte(`
clusters:
  - name: prod
    kubeconfig: /k
    labels: {"bad key!": x, env: "not a value!"}
`))
	for _, want := range []string{`clusters[0].labels[bad key!]: "bad key!" is not a label key`, `clusters[0].labels[env]: "not a value!" is not a label value`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to contain %q", err, want)
		}
	}
}
