package review

import (
	"fmt"

	"github.com/pmezard/go-difflib/difflib"
	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// YAMLDiff returns the proposed policy as YAML and a unified diff from the current policy to
// it. Both sides are written by the same encoder, so the diff shows only what the proposal
// changes, not the layout or comments of the file (which the proposal does not keep).
func YAMLDiff(current, proposed *policy.Policy) (proposedYAML, diff string, err error) {
	a, err := yaml.Marshal(current)
	if err != nil {
		return "", "", fmt.Errorf("encode the current policy: %w", err)
	}
	b, err := yaml.Marshal(proposed)
	if err != nil {
		return "", "", fmt.Errorf("encode the proposed policy: %w", err)
	}
	diff, err = difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: "policy (current)", ToFile: "policy (proposed)", Context: 3,
	})
	if err != nil {
		return "", "", fmt.Errorf("diff the policies: %w", err)
	}
	return string(b), diff, nil
}
