package detect

import (
	"fmt"
	"slices"
	"strings"
)

// thresholdUse lists, per detection, the numeric thresholds of Config it reads, by the names a
// configuration file uses for them. maxEvidence applies to every detection.
var thresholdUse = map[string][]string{
	"auth-failure-burst": {"minAuthFailures", "burstFactor"},
	"mass-delete":        {"minDeletes", "burstFactor"},
	"secret-list-burst":  {"minSecretNamespaces", "burstFactor"},
	"unusual-hours":      {"minUnusualEvents", "minHistoryDays"},
	"new-source":         {"minHistoryDays"},
	// Refusals by admission policies (kaccess guardrails, Pod Security) per subject.
	"guardrail-violation-attempts": {"minGuardrailViolations"},
}

// Thresholds returns the names of the thresholds detection name may be given with
// WithThresholds, sorted.
func Thresholds(name string) []string {
	out := append([]string{"maxEvidence"}, thresholdUse[name]...)
	slices.Sort(out)
	return out
}

// WithThresholds returns c with the thresholds set for detection name; names it does not
// read are an error naming those it does.
func (c Config) WithThresholds(name string, values map[string]int) (Config, error) {
	allowed := Thresholds(name)
	var bad []string
	for k, v := range values {
		if !slices.Contains(allowed, k) {
			bad = append(bad, k)
			continue
		}
		p := map[string]*int{
			"minAuthFailures": &c.MinAuthFailures, "burstFactor": &c.BurstFactor, "minDeletes": &c.MinDeletes,
			"minSecretNamespaces": &c.MinSecretNamespaces, "minUnusualEvents": &c.MinUnusualEvents,
			"minHistoryDays": &c.MinHistoryDays, "maxEvidence": &c.MaxEvidence,
			"minGuardrailViolations": &c.MinGuardrailViolations,
		}[k]
		*p = v
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return c, fmt.Errorf("%s reads no threshold %s; it reads %s", name, strings.Join(bad, ", "), strings.Join(allowed, ", "))
	}
	return c, nil
}
