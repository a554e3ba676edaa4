package policy

import "fmt"

// Warning is an escalation Finding in a role offered for elevation.
type Warning struct {
	// Elevation and Role name the policy entries; Path is the elevation's field path.
	Elevation string
	Role      string
	Path      string
	Finding   Finding
}

// String reads "elevations[0] (break-glass) role admin: critical: ...".
func (w Warning) String() string {
	rule := ""
	if w.Finding.Rule >= 0 {
		rule = fmt.Sprintf(" rules[%d]", w.Finding.Rule)
	}
	return fmt.Sprintf("%s (%s) role %s%s: %s: %s", w.Path, w.Elevation, w.Role, rule, w.Finding.Severity, w.Finding.Reason)
}

// wellKnown are findings for the default ClusterRoles kaccess cannot read rules from offline.
var wellKnown = map[string][]Finding{
	"cluster-admin": {{SeverityCritical, -1, "cluster-admin", "cluster-admin allows every verb on every resource, RBAC included"}},
	"admin": {
		{SeverityCritical, -1, "rbac-write", "admin may create RoleBindings in its namespace, granting its own rights to anyone"},
		{SeverityHigh, -1, "secrets-read", "admin reads secrets, exposing other identities' credentials"},
		{SeverityHigh, -1, "pod-exec", "admin may exec into pods and run them as any service account of the namespace"},
	},
	"edit": {
		{SeverityHigh, -1, "secrets-read", "edit reads secrets, exposing other identities' credentials"},
		{SeverityHigh, -1, "pod-exec", "edit may exec into pods and run them as any service account of the namespace"},
	},
}

// Warnings checks every role offered in an elevation for escalation paths: the rules of
// curated roles, and references to the well-known ClusterRoles cluster-admin, admin and edit.
// Other references cannot be checked without the cluster and give no warning.
func (p *Policy) Warnings() []Warning {
	var out []Warning
	for i, e := range p.Elevations {
		r := p.role(e.Role)
		if r == nil {
			continue
		}
		var findings []Finding
		switch {
		case r.Ref == nil:
			findings = CheckEscalation(r.Rules)
		case r.Ref.Kind == RefKindClusterRole:
			findings = wellKnown[r.Ref.Name]
		}
		for _, f := range findings {
			out = append(out, Warning{Elevation: e.Name, Role: r.Name, Path: fmt.Sprintf("elevations[%d]", i), Finding: f})
		}
	}
	return out
}
