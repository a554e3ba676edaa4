package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kaccess/kaccess/internal/rbacsync/celenv"
)

// imagePattern is a registry host (with an optional port), then lower-case repository path
// components, optionally ending in "/". Tags and digests are not prefixes.
var imagePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*/?$`)

// maxExpression bounds a cel guardrail's expression (the API server allows 5120 characters).
const maxExpression = 5120

// Resource names a ResourceGuardrail may require.
var guardrailResources = []string{"cpu", "memory"}

// guardrail checks what every guardrail has (a unique name, its mode where it has one, its
// namespaces and clusters) and returns its field path.
func (v *validator) guardrail(list string, i int, name string, mode *Mode, scope Scope, target Target, names map[string]bool, kinds map[string]string) string {
	path := fmt.Sprintf("guardrails.%s[%d]", list, i)
	v.name(path+".name", name, names)
	kinds[name] = list
	if mode != nil {
		v.mode(path+".mode", *mode)
	}
	v.scope(path, scope)
	v.target(path, target)
	return path
}

func (v *validator) guardrails(g *Guardrails) {
	const base = "guardrails"
	names := map[string]bool{}
	kinds := map[string]string{} // guardrail name -> list it is in
	for i, r := range g.Images {
		path := v.guardrail("images", i, r.Name, &r.Mode, r.Scope, r.Target, names, kinds)
		if len(r.Allowed) == 0 {
			v.bad(path+".allowed", `at least one registry or repository is required, such as "registry.example.com/"`)
		}
		seen := map[string]bool{}
		for j, a := range r.Allowed {
			v.imagePrefix(fmt.Sprintf("%s.allowed[%d]", path, j), a, seen)
		}
	}
	for i, r := range g.Resources {
		path := v.guardrail("resources", i, r.Name, &r.Mode, r.Scope, r.Target, names, kinds)
		v.resourceNames(path+".requests", r.Requests)
		v.resourceNames(path+".limits", r.Limits)
		if r.Requests != nil && r.Limits != nil && len(r.Requests)+len(r.Limits)+len(r.Maximums) == 0 {
			v.bad(path, "requires nothing: list requests, limits or maximums (or leave requests and limits out for cpu and memory)")
		}
		for j, m := range r.Maximums {
			mp := fmt.Sprintf("%s.maximums[%d]", path, j)
			if len(m.Namespaces) == 0 {
				v.bad(mp+".namespaces", "at least one namespace is required")
			}
			v.namespaces(mp+".namespaces", m.Namespaces)
			if m.CPU == "" && m.Memory == "" {
				v.bad(mp, "set cpu and/or memory")
			}
			v.quantity(mp+".cpu", m.CPU)
			v.quantity(mp+".memory", m.Memory)
		}
	}
	for i, r := range g.HostAccess {
		v.guardrail("hostAccess", i, r.Name, &r.Mode, r.Scope, r.Target, names, kinds)
	}
	for i, r := range g.CEL {
		path := v.guardrail("cel", i, r.Name, &r.Mode, r.Scope, r.Target, names, kinds)
		switch {
		case strings.TrimSpace(r.Expression) == "":
			v.bad(path+".expression", `required, a CEL expression true for allowed objects, such as variables.containers.all(c, !c.image.endsWith(":latest"))`)
		case len(r.Expression) > maxExpression:
			v.bad(path+".expression", "%d characters exceeds the limit of %d", len(r.Expression), maxExpression)
		default:
			if err := celenv.CheckBool(r.Expression); err != nil {
				v.bad(path+".expression", "%s", strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}
		if strings.TrimSpace(r.Message) == "" {
			v.bad(path+".message", "required: what a refused request is told")
		}
	}
	for i, r := range g.PodSecurity {
		path := v.guardrail("podSecurity", i, r.Name, &r.Mode, r.Scope, r.Target, names, kinds)
		if r.Level != LevelBaseline && r.Level != LevelRestricted {
			v.bad(path+".level", "must be %q or %q, got %q", LevelBaseline, LevelRestricted, r.Level)
		}
	}
	for i, r := range g.NetworkPolicies {
		path := v.guardrail("networkPolicies", i, r.Name, nil, r.Scope, r.Target, names, kinds)
		flows := map[string]bool{}
		for j, f := range r.Allow {
			fp := fmt.Sprintf("%s.allow[%d]", path, j)
			v.name(fp+".name", f.Name, flows)
			v.selector(fp+".podSelector", f.PodSelector)
			if len(f.From) == 0 {
				v.bad(fp+".from", "at least one peer is required (a namespaceSelector and/or podSelector)")
			}
			for k, p := range f.From {
				pp := fmt.Sprintf("%s.from[%d]", fp, k)
				if p.NamespaceSelector == nil && p.PodSelector == nil {
					v.bad(pp, "set namespaceSelector and/or podSelector")
				}
				v.selector(pp+".namespaceSelector", p.NamespaceSelector)
				v.selector(pp+".podSelector", p.PodSelector)
			}
			for k, p := range f.Ports {
				v.port(fmt.Sprintf("%s.ports[%d]", fp, k), p)
			}
		}
	}
	for i, e := range g.Exemptions {
		path := fmt.Sprintf("%s.exemptions[%d]", base, i)
		if len(e.Guardrails) == 0 {
			v.bad(path+".guardrails", "name at least one guardrail")
		}
		for j, n := range e.Guardrails {
			gp := fmt.Sprintf("%s.guardrails[%d]", path, j)
			switch kinds[n] {
			case "":
				v.bad(gp, "unknown guardrail %q", n)
			case "networkPolicies":
				v.bad(gp, "guardrail %q is a networkPolicies guardrail: narrow its namespaces instead of exempting", n)
			case "podSecurity":
				if e.Workload != "" {
					v.bad(gp, "guardrail %q is a podSecurity guardrail, which acts on whole namespaces: exempt a namespace, not a workload", n)
				}
				if e.Namespace == "" {
					v.bad(gp, "guardrail %q is a podSecurity guardrail: the exemption needs a namespace", n)
				}
			}
			if slices.Index(e.Guardrails, n) != j {
				v.bad(gp, "duplicate guardrail %q", n)
			}
		}
		if e.Namespace == "" && e.Workload == "" {
			v.bad(path, "set namespace and/or workload")
		}
		if e.Namespace != "" {
			if msgs := validation.IsDNS1123Label(e.Namespace); len(msgs) > 0 {
				v.bad(path+".namespace", "%q is not a namespace name: %s", e.Namespace, strings.Join(msgs, "; "))
			}
		}
		if e.Workload != "" {
			if msgs := validation.IsDNS1123Subdomain(e.Workload); len(msgs) > 0 {
				v.bad(path+".workload", "%q is not an object name: %s", e.Workload, strings.Join(msgs, "; "))
			}
		}
		if strings.TrimSpace(e.Reason) == "" {
			v.bad(path+".reason", "required: say why the exemption exists (a ticket, an owner)")
		}
		if e.Expires == "" {
			v.bad(path+".expires", `required, an RFC 3339 time such as "2026-12-31T00:00:00Z"`)
		} else if _, err := time.Parse(time.RFC3339, e.Expires); err != nil {
			v.bad(path+".expires", "%q is not an RFC 3339 time such as \"2026-12-31T00:00:00Z\"", e.Expires)
		}
	}
}

func (v *validator) mode(path string, m Mode) {
	switch m {
	case ModeWarn, ModeAudit, ModeDeny:
	case "":
		v.bad(path, "required: %q, %q or %q", ModeWarn, ModeAudit, ModeDeny)
	default:
		v.bad(path, "must be %q, %q or %q, got %q", ModeWarn, ModeAudit, ModeDeny, m)
	}
}

func (v *validator) scope(path string, s Scope) {
	switch {
	case len(s.Namespaces) > 0 && s.NamespaceSelector != nil:
		v.bad(path, "set only one of namespaces and namespaceSelector")
	case len(s.Namespaces) > 0:
		v.namespaces(path+".namespaces", s.Namespaces)
	case s.NamespaceSelector != nil:
		v.selector(path+".namespaceSelector", s.NamespaceSelector)
	default:
		v.bad(path, "set one of namespaces and namespaceSelector ({} selects every namespace)")
	}
}

func (v *validator) selector(path string, s *metav1.LabelSelector) {
	if s == nil {
		return
	}
	if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
		v.bad(path, "%v", err)
	}
}

func (v *validator) imagePrefix(path, p string, seen map[string]bool) {
	switch {
	case p == "":
		v.bad(path, "empty")
		return
	case strings.Contains(p, "://"):
		v.bad(path, "%q: write the registry without a scheme, such as \"registry.example.com/\"", p)
		return
	case strings.ContainsAny(p, "@"):
		v.bad(path, "%q: a digest is not a prefix; list the repository and set requireDigest", p)
		return
	case !imagePattern.MatchString(p):
		v.bad(path, "%q is not a registry or repository prefix such as \"registry.example.com/\" or \"ghcr.io/acme/app\" (lower-case path, no tag)", p)
		return
	}
	host, _, hasPath := strings.Cut(p, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		v.bad(path, "%q must start with a registry host such as \"docker.io/\": images are matched as written, and a bare name would match any registry's", p)
		return
	}
	if !hasPath {
		v.bad(path, "%q: a registry alone must end with \"/\", such as %q", p, p+"/")
		return
	}
	if seen[p] {
		v.bad(path, "duplicate %q", p)
	}
	seen[p] = true
}

func (v *validator) resourceNames(path string, names []string) {
	for i, n := range names {
		np := fmt.Sprintf("%s[%d]", path, i)
		if !slices.Contains(guardrailResources, n) {
			v.bad(np, "must be one of %s, got %q", strings.Join(guardrailResources, ", "), n)
		} else if slices.Index(names, n) != i {
			v.bad(np, "duplicate %q", n)
		}
	}
}

func (v *validator) quantity(path, q string) {
	if q == "" {
		return
	}
	if _, err := resource.ParseQuantity(q); err != nil {
		v.bad(path, "%q is not a Kubernetes quantity such as \"500m\", \"2\" or \"4Gi\"", q)
	}
}

func (v *validator) port(path string, p Port) {
	switch p.Protocol {
	case "", "TCP", "UDP", "SCTP":
	default:
		v.bad(path+".protocol", "must be TCP, UDP or SCTP, got %q", p.Protocol)
	}
	if p.Port.Type == intstr.String {
		if msgs := validation.IsValidPortName(p.Port.StrVal); len(msgs) > 0 {
			v.bad(path+".port", "%q is not a port number or name: %s", p.Port.StrVal, strings.Join(msgs, "; "))
		}
	} else if msgs := validation.IsValidPortNum(int(p.Port.IntVal)); len(msgs) > 0 {
		v.bad(path+".port", "%d: %s", p.Port.IntVal, strings.Join(msgs, "; "))
	}
}

// GuardrailWarnings lists what is valid but worth a look at now: exemptions that have expired
// (they are no longer rendered; remove them from the file).
func (p *Policy) GuardrailWarnings(now time.Time) []string {
	if p.Guardrails == nil {
		return nil
	}
	var out []string
	for i, e := range p.Guardrails.Exemptions {
		if t := e.ExpiresAt(); !t.IsZero() && !t.After(now) {
			out = append(out, fmt.Sprintf("guardrails.exemptions[%d].expires: expired at %s; it no longer applies: remove it from the file",
				i, t.UTC().Format(time.RFC3339)))
		}
	}
	return out
}

// NextExpiry returns the earliest exemption expiry after now, or the zero time: the controller
// runs a pass then, so an expired exemption stops applying on time.
func (p *Policy) NextExpiry(now time.Time) time.Time {
	var next time.Time
	if p.Guardrails == nil {
		return next
	}
	for _, e := range p.Guardrails.Exemptions {
		if t := e.ExpiresAt(); t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}
