// Package arch holds the layout rules as a test: which internal package may import which.
// A new package or import that breaks the picture fails here, not in review.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/kaccess/kaccess/"

// allowed lists, per internal package, the internal packages its non-test code may import
// (the generated API under api/ may be imported by anyone).
// Feature packages stay small and independent; internal/gateway is the one that wires them.
var allowed = map[string][]string{
	"internal/access":                 {"internal/audit/event", "internal/rbacsync/policy"},
	"internal/alerting":               nil,
	"internal/apiserver":              {"internal/access", "internal/audit/event", "internal/audit/k8saudit", "internal/audit/query", "internal/authn", "internal/rbacsync/policy/review", "internal/session"},
	"internal/arch":                   nil,
	"internal/audit/chdb":             {"internal/audit/event", "internal/audit/schema"},
	"internal/audit/chdb/engine":      nil,
	"internal/audit/event":            {"internal/authn"},
	"internal/audit/clickhouse":       {"internal/audit/event", "internal/audit/schema"},
	"internal/audit/detect":           {"internal/audit/event", "internal/audit/schema"},
	"internal/audit/findings":         {"internal/audit/detect", "internal/audit/event", "internal/audit/query", "internal/audit/schema"},
	"internal/audit/k8saudit":         {"internal/audit/event"},
	"internal/audit/schema":           {"internal/audit/event"},
	"internal/audit/query":            {"internal/audit/event", "internal/audit/schema"},
	"internal/audit/spool":            nil,
	"internal/audit/capture":          {"internal/audit/event", "internal/authn", "internal/kubestatus", "internal/requestctx"},
	"internal/audit/ship":             {"internal/audit/event", "internal/audit/spool"},
	"internal/audit/storetest":        {"internal/audit/event", "internal/audit/ship"},
	"internal/audit/webhook":          {"internal/audit/event", "internal/kubestatus"},
	"internal/authn":                  {"internal/session"},
	"internal/authn/ldap":             {"internal/authn", "internal/duration"},
	"internal/authn/oidc":             {"internal/authn", "internal/duration"},
	"internal/cli":                    {"internal/config", "internal/rbacsync", "internal/rbacsync/dryrun", "internal/rbacsync/policy"},
	"internal/config":                 {"internal/audit/detect", "internal/authn/ldap", "internal/authn/oidc", "internal/duration", "internal/yamldoc"},
	"internal/duration":               nil,
	"internal/gateway":                {"internal/access", "internal/rbacsync/policy/review", "internal/alerting", "internal/audit/findings", "internal/apiserver", "internal/audit/capture", "internal/audit/chdb", "internal/audit/clickhouse", "internal/audit/detect", "internal/audit/event", "internal/audit/query", "internal/audit/schema", "internal/audit/ship", "internal/audit/spool", "internal/audit/webhook", "internal/authn", "internal/authn/ldap", "internal/authn/oidc", "internal/config", "internal/kubestatus", "internal/proxy", "internal/rbacsync", "internal/rbacsync/policy", "internal/requestctx", "internal/revocation", "internal/session", "internal/tlsutil", "internal/upstream"},
	"internal/kubestatus":             nil,
	"internal/proxy":                  {"internal/authn", "internal/kubestatus", "internal/requestctx"},
	"internal/requestctx":             {"internal/authn"},
	"internal/revocation":             nil,
	"internal/rbacsync":               {"internal/rbacsync/dryrun", "internal/rbacsync/policy"},
	"internal/rbacsync/dryrun":        {"internal/rbacsync/celenv", "internal/rbacsync/policy"},
	"internal/rbacsync/celenv":        {},
	"internal/rbacsync/policy":        {"internal/rbacsync/celenv", "internal/yamldoc"},
	"internal/rbacsync/policy/review": {"internal/rbacsync/policy"},
	"internal/session":                nil,
	"internal/testenv":                nil,
	"internal/tlsutil":                nil,
	"internal/upstream":               {"internal/config"},
	"internal/yamldoc":                nil,
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		self := strings.TrimPrefix(p.ImportPath, module)
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if strings.HasPrefix(dep, "cmd/") {
				t.Errorf("%s imports %s: nothing may import cmd/", self, dep)
			}
			if !strings.HasPrefix(self, "internal/") || !strings.HasPrefix(dep, "internal/") {
				continue // the rules are about internal packages; api/ is for everyone
			}
			rules, known := allowed[self]
			if !known {
				t.Errorf("%s is a new internal package: add its allowed imports to arch_test.go", self)
				break
			}
			if !slices.Contains(rules, dep) {
				t.Errorf("%s imports %s, which arch_test.go does not allow", self, dep)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if seen < len(allowed) {
		t.Fatalf("go list saw %d packages, fewer than the %d the rules name", seen, len(allowed))
	}
}

// chdb-go's package init loads libchdb.so and panics when it is missing. The gateway must start
// without the library when it writes to a ClickHouse server, so only the kaccess-chdb helper
// may link chdb-go; the gateway reaches the embedded store through internal/audit/chdb.
func TestOnlyTheHelperLinksChdb(t *testing.T) {
	for _, p := range []string{"cmd/gateway", "cmd/kaccess", "internal/audit/chdb", "internal/gateway"} {
		out, err := exec.Command("go", "list", "-deps", module+p).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", p, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/chdb-io/chdb-go") {
				t.Errorf("%s depends on %s: its init panics without libchdb.so; import internal/audit/chdb, not chdb-go", p, dep)
			}
		}
	}
}
