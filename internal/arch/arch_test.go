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
	"internal/apiserver":       {"internal/authn", "internal/session"},
	"internal/arch":            nil,
	"internal/audit/event":     {"internal/authn"},
	"internal/audit/spool":     nil,
	"internal/authn":           {"internal/session"},
	"internal/authn/ldap":      {"internal/authn", "internal/duration"},
	"internal/authn/oidc":      {"internal/authn", "internal/duration"},
	"internal/cli":             nil,
	"internal/config":          {"internal/authn/ldap", "internal/authn/oidc", "internal/duration"},
	"internal/duration":        nil,
	"internal/gateway":         {"internal/apiserver", "internal/authn", "internal/authn/ldap", "internal/authn/oidc", "internal/config", "internal/kubestatus", "internal/proxy", "internal/requestctx", "internal/revocation", "internal/session", "internal/tlsutil", "internal/upstream"},
	"internal/kubestatus":      nil,
	"internal/proxy":           {"internal/authn", "internal/kubestatus", "internal/requestctx"},
	"internal/requestctx":      nil,
	"internal/revocation":      nil,
	"internal/rbacsync/policy": nil,
	"internal/session":         nil,
	"internal/testenv":         nil,
	"internal/tlsutil":         nil,
	"internal/upstream":        {"internal/config"},
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
