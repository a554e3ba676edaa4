package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

const minimalConfig = "stateDir: /x\nclusters: [{name: dev, kubeconfig: /k}]\n"

// TestParseHostile: malformed files are refused, each with an error naming the field (or the
// line) at fault, in bounded time.
func TestParseHostile(t *testing.T) {
	t.Parallel()
	// a: 9 lols, b: 9 a's, ... i: 9^9 lols once expanded.
	laughs := "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
	for c := 'b'; c <= 'i'; c++ {
		prev := "*" + string(c-1)
		laughs += string(c) + ": &" + string(c) + " [" + strings.Repeat(prev+",", 8) + prev + "]\n"
	}
	tests := []struct{ name, yaml, want string }{
		{"unknown nested field", minimalConfig + "session: {ttlx: 1h}", `unknown field "session.ttlx"`},
		{"case variant of a field", "StateDir: /x\nclusters: [{name: dev, kubeconfig: /k}]", `unknown field "StateDir"`},
		{"case variant in a list", "stateDir: /x\nclusters: [{name: dev, kubeconfig: /k, Server: https://x}]", `unknown field "clusters[0].Server"`},
		{"two spellings of one field", minimalConfig + "StateDir: /y\n", `unknown field "StateDir"`},
		{"duplicate key", minimalConfig + "stateDir: /y\n", `key "stateDir" already set`},
		{"wrong type", "stateDir: /x\nclusters: [{name: [dev], kubeconfig: /k}]", "clusters.name"},
		{"second document", minimalConfig + "---\nsession: {ttl: 1h}\n", "more than one YAML document"},
		{"billion laughs", minimalConfig + laughs, "decode config"},
		{"recursive alias", "stateDir: &a [*a]\n", "decode config"},
		{"deep nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), "decode config"},
		{"huge file", minimalConfig + "# " + strings.Repeat("x", MaxFileSize), "exceeds the limit"},
		{"a scalar", "hello", "decode config"},
		{"tab indentation", "listen:\n\taddress: :1\n", "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c, err := Parse([]byte(tt.yaml))
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Parse took %v", d)
			}
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %.300q\nwant it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := Parse([]byte("---\n" + minimalConfig + "---\n# the end\n")); err != nil {
		t.Errorf("document markers around one document: %v", err)
	}
}

// FuzzParse: Parse never panics; an error is a decode error or a ValidationError whose every
// problem has a field path; a config that parses still validates after a second pass of
// defaults (SetDefaults is idempotent).
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte(""))
	f.Add([]byte("listen: {address: ':6443', metricsAddress: 'x'}\nclusters: [{name: Dev_1, server: 'http://[::1'}]"))
	f.Add([]byte(minimalConfig + "session: {ttl: 1h, leeway: -5s}\ntimeouts: {request: 0s}\n"))
	f.Add([]byte(minimalConfig + "directories: [{name: corp, type: activeDirectory, urls: ['ldaps://dc'], bindDN: 'x'}]\n"))
	f.Add([]byte(minimalConfig + "oidc: [{name: g, issuer: 'https://i', clientID: c}]\n"))
	f.Add([]byte(minimalConfig + "audit: {store: {type: clickhouse}}\naccess: {policyFile: /p}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("a config returned with the error")
			}
			if ve, ok := AsValidationError(err); ok {
				if len(ve.Problems) == 0 {
					t.Fatal("a ValidationError without problems")
				}
				for _, p := range ve.Problems {
					if p.Path == "" {
						t.Fatalf("problem %q has no field path", p.Problem)
					}
				}
				return
			}
			if !strings.HasPrefix(err.Error(), "decode config: ") {
				t.Fatalf("error %q is neither a decode nor a validation error", err)
			}
			return
		}
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			t.Fatalf("a parsed config fails validation after defaults again: %v", err)
		}
	})
}

// TestDeployedExampleParses: the strict decoder still takes the example the Kubernetes
// manifest ships (its password and key files need not exist to parse).
func TestDeployedExampleParses(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/kubernetes/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "gateway.yaml: |\n")
	if !ok {
		t.Fatal("no gateway.yaml in the ConfigMap")
	}
	var doc strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		if line == "---" {
			break
		}
		doc.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	if _, err := Parse([]byte(doc.String())); err != nil {
		t.Fatalf("the deployed example: %v", err)
	}
}
