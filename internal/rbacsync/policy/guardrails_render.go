package policy

import (
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels and names of guardrail objects.
const (
	// GuardrailLabel names the guardrail an object comes from; with ManagedByLabel it selects
	// what the controller owns (RBAC objects carry RoleLabel instead, so neither list touches
	// the other's objects).
	GuardrailLabel = "kaccess.io/guardrail"
	// GuardrailPrefix starts the names of ValidatingAdmissionPolicies, their bindings and
	// NetworkPolicies (':' is not allowed in those names).
	GuardrailPrefix = "kaccess-"
	// PodSecurityOwnedLabel lists, on a namespace, the Pod Security Admission modes whose
	// labels kaccess set ("enforce", "enforce.warn", ...): only those are ever changed or
	// removed; pod-security labels set by people are left alone.
	PodSecurityOwnedLabel = "kaccess.io/pod-security"
	// podSecurityPrefix starts the Pod Security Admission labels.
	podSecurityPrefix = "pod-security.kubernetes.io/"
	// ExemptionCondition is the matchCondition of a policy that lets exempted objects through.
	ExemptionCondition = "kaccess-exemptions"
	// DefaultDenySuffix ends the name of a namespace's default-deny NetworkPolicy.
	DefaultDenySuffix = "default-deny"
)

// GuardrailObjects are the objects guardrails render into, each list sorted by
// (namespace,) name, plus the labels the selected namespaces must carry.
type GuardrailObjects struct {
	Policies        []*admissionv1.ValidatingAdmissionPolicy
	Bindings        []*admissionv1.ValidatingAdmissionPolicyBinding
	NetworkPolicies []*networkingv1.NetworkPolicy
	// NamespaceLabels are, per namespace, the pod-security labels kaccess must own there
	// (with PodSecurityOwnedLabel); a namespace absent owns none.
	NamespaceLabels map[string]map[string]string
}

// All returns the policies, bindings and NetworkPolicies as Objects, policies first.
func (o *GuardrailObjects) All() []Object {
	var all []Object
	for _, x := range o.Policies {
		all = append(all, x)
	}
	for _, x := range o.Bindings {
		all = append(all, x)
	}
	for _, x := range o.NetworkPolicies {
		all = append(all, x)
	}
	return all
}

// GuardrailName is the name of the ValidatingAdmissionPolicy (and its binding) of guardrail g.
func GuardrailName(g string) string { return GuardrailPrefix + g }

// NetworkPolicyName is the name of a NetworkPolicy of network guardrail g: flow "" is its
// default deny.
func NetworkPolicyName(g, flow string) string {
	if flow == "" {
		return GuardrailPrefix + g + "-" + DefaultDenySuffix
	}
	return GuardrailPrefix + g + "-allow-" + flow
}

// DesiredGuardrails renders the policy's guardrails as the objects the API server enforces,
// at now: exemptions that expired by now are left out (call again at NextExpiry). It is a pure
// function of its inputs. p must be valid.
func DesiredGuardrails(p *Policy, namespaces []Namespace, now time.Time) (*GuardrailObjects, error) {
	out := &GuardrailObjects{NamespaceLabels: map[string]map[string]string{}}
	g := p.Guardrails
	if g == nil {
		return out, nil
	}
	active := activeExemptions(g.Exemptions, now)
	for _, r := range g.Images {
		vs := imageValidations(r)
		out.add(r.Name, r.Mode, r.Scope, vs, active[r.Name])
	}
	for _, r := range g.Resources {
		vs, err := resourceValidations(r)
		if err != nil {
			return nil, err
		}
		out.add(r.Name, r.Mode, r.Scope, vs, active[r.Name])
	}
	for _, r := range g.CEL {
		out.add(r.Name, r.Mode, r.Scope, validations{rules: []admissionv1.Validation{{
			Expression: r.Expression, Message: "guardrail " + r.Name + ": " + r.Message, Reason: forbidden(),
		}}}, active[r.Name])
	}
	for _, r := range g.HostAccess {
		out.add(r.Name, r.Mode, r.Scope, hostAccessValidations(r), active[r.Name])
	}
	for i, r := range g.PodSecurity {
		sel, err := scopeSelector(r.Scope, namespaces)
		if err != nil {
			return nil, fmt.Errorf("guardrails.podSecurity[%d]: %w", i, err)
		}
		exempt := map[string]bool{}
		for _, e := range active[r.Name] {
			exempt[e.Namespace] = true
		}
		key := podSecurityPrefix + psaMode(r.Mode)
		for _, ns := range sel {
			if exempt[ns] {
				continue
			}
			l := out.NamespaceLabels[ns]
			if l == nil {
				l = map[string]string{}
				out.NamespaceLabels[ns] = l
			}
			// Two guardrails on one namespace and mode: the stricter level wins.
			if cur, ok := l[key]; !ok || cur == LevelBaseline {
				l[key] = r.Level
			}
		}
	}
	for ns, l := range out.NamespaceLabels {
		var modes []string
		for k := range l {
			modes = append(modes, strings.TrimPrefix(k, podSecurityPrefix))
		}
		sort.Strings(modes)
		out.NamespaceLabels[ns][PodSecurityOwnedLabel] = strings.Join(modes, ".")
	}
	for i, r := range g.NetworkPolicies {
		sel, err := scopeSelector(r.Scope, namespaces)
		if err != nil {
			return nil, fmt.Errorf("guardrails.networkPolicies[%d]: %w", i, err)
		}
		for _, ns := range sel {
			out.NetworkPolicies = append(out.NetworkPolicies, networkPolicies(r, ns)...)
		}
	}
	sort.Slice(out.Policies, func(i, j int) bool { return out.Policies[i].Name < out.Policies[j].Name })
	sort.Slice(out.Bindings, func(i, j int) bool { return out.Bindings[i].Name < out.Bindings[j].Name })
	sort.Slice(out.NetworkPolicies, func(i, j int) bool {
		a, b := out.NetworkPolicies[i], out.NetworkPolicies[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, nil
}

func psaMode(m Mode) string {
	if m == ModeDeny {
		return "enforce"
	}
	return string(m)
}

// activeExemptions indexes the exemptions in force at now by guardrail name.
func activeExemptions(es []Exemption, now time.Time) map[string][]Exemption {
	out := map[string][]Exemption{}
	for _, e := range es {
		if !e.ExpiresAt().After(now) {
			continue
		}
		for _, g := range e.Guardrails {
			out[g] = append(out[g], e)
		}
	}
	return out
}

// scopeSelector returns the existing namespaces a scope selects, sorted.
func scopeSelector(s Scope, namespaces []Namespace) ([]string, error) {
	var out []string
	if s.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(s.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("namespaceSelector: %w", err)
		}
		for _, ns := range namespaces {
			if sel.Matches(labels.Set(ns.Labels)) {
				out = append(out, ns.Name)
			}
		}
	} else {
		exists := map[string]bool{}
		for _, ns := range namespaces {
			exists[ns.Name] = true
		}
		for _, n := range s.Namespaces {
			if exists[n] {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Variables every workload policy defines: the pod spec wherever the kind keeps it, and all
// its containers (init containers included).
var workloadVariables = []admissionv1.Variable{
	{Name: "podSpec", Expression: `object.kind == "Pod" ? object.spec : ` +
		`(object.kind == "CronJob" ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)`},
	{Name: "containers", Expression: `variables.podSpec.containers + ` +
		`(has(variables.podSpec.initContainers) ? variables.podSpec.initContainers : [])`},
}

// WorkloadResources are what workload guardrails match, by API group.
var WorkloadResources = map[string][]string{
	"":      {"pods"},
	"apps":  {"daemonsets", "deployments", "replicasets", "statefulsets"},
	"batch": {"cronjobs", "jobs"},
}

// validations is what one guardrail checks: variables after workloadVariables, then rules.
type validations struct {
	variables []admissionv1.Variable
	rules     []admissionv1.Validation
}

func (o *GuardrailObjects) add(name string, mode Mode, scope Scope, vs validations, exempt []Exemption) {
	objName := GuardrailName(name)
	meta := metav1.ObjectMeta{Name: objName, Labels: map[string]string{ManagedByLabel: ManagedByValue, GuardrailLabel: name}}
	fail := admissionv1.Fail
	namespaced := admissionv1.NamespacedScope
	var rules []admissionv1.NamedRuleWithOperations
	for _, group := range []string{"", "apps", "batch"} {
		rules = append(rules, admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
			Rule: admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"v1"},
				Resources: WorkloadResources[group], Scope: &namespaced},
		}})
	}
	pol := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: meta,
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy:    &fail,
			MatchConstraints: matchResources(nil, rules),
			Variables:        append(append([]admissionv1.Variable(nil), workloadVariables...), vs.variables...),
			Validations:      vs.rules,
		},
	}
	if cond := exemptionCondition(exempt); cond != "" {
		pol.Spec.MatchConditions = []admissionv1.MatchCondition{{Name: ExemptionCondition, Expression: cond}}
	}
	o.Policies = append(o.Policies, pol)
	o.Bindings = append(o.Bindings, &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: *meta.DeepCopy(),
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        objName,
			MatchResources:    matchResources(namespaceSelector(scope), nil),
			ValidationActions: []admissionv1.ValidationAction{validationAction(mode)},
		},
	})
}

// matchResources fills in what the API server would default, so a read-back object compares
// equal to the rendered one.
func matchResources(ns *metav1.LabelSelector, rules []admissionv1.NamedRuleWithOperations) *admissionv1.MatchResources {
	equivalent := admissionv1.Equivalent
	if ns == nil {
		ns = &metav1.LabelSelector{}
	}
	return &admissionv1.MatchResources{
		NamespaceSelector: ns, ObjectSelector: &metav1.LabelSelector{},
		MatchPolicy: &equivalent, ResourceRules: rules,
	}
}

// namespaceSelector turns a scope into a binding's selector: names become a match on the
// kubernetes.io/metadata.name label the API server sets on every namespace.
func namespaceSelector(s Scope) *metav1.LabelSelector {
	if s.NamespaceSelector != nil {
		return s.NamespaceSelector.DeepCopy()
	}
	names := append([]string(nil), s.Namespaces...)
	sort.Strings(names)
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: names,
	}}}
}

func validationAction(m Mode) admissionv1.ValidationAction {
	switch m {
	case ModeWarn:
		return admissionv1.Warn
	case ModeAudit:
		return admissionv1.Audit
	}
	return admissionv1.Deny
}

// lit is a CEL string literal.
func lit(s string) string { return strconv.Quote(s) }

func litList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = lit(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func imageValidations(r ImageGuardrail) validations {
	var allowed []string
	for _, p := range r.Allowed {
		if strings.HasSuffix(p, "/") {
			allowed = append(allowed, "c.image.startsWith("+lit(p)+")")
		} else {
			allowed = append(allowed, fmt.Sprintf("c.image == %s || c.image.startsWith(%s) || c.image.startsWith(%s)",
				lit(p), lit(p+":"), lit(p+"@")))
		}
	}
	vs := validations{
		variables: []admissionv1.Variable{{Name: "badImages",
			Expression: "variables.containers.filter(c, !(" + strings.Join(allowed, " || ") + ")).map(c, c.image)"}},
		rules: []admissionv1.Validation{{
			Expression: "size(variables.badImages) == 0",
			MessageExpression: lit("guardrail "+r.Name+": image(s) ") + " + variables.badImages.join(\", \") + " +
				lit(" not from an allowed registry ("+strings.Join(r.Allowed, ", ")+")"),
			Reason: forbidden(),
		}},
	}
	if r.RequireDigest {
		vs.variables = append(vs.variables, admissionv1.Variable{Name: "undigested",
			Expression: `variables.containers.filter(c, !c.image.contains("@sha256:")).map(c, c.image)`})
		vs.rules = append(vs.rules, admissionv1.Validation{
			Expression: "size(variables.undigested) == 0",
			MessageExpression: lit("guardrail "+r.Name+": image(s) ") + " + variables.undigested.join(\", \") + " +
				lit(" not pinned by digest (@sha256:...)"),
			Reason: forbidden(),
		})
	}
	return vs
}

func resourceValidations(r ResourceGuardrail) (validations, error) {
	requests, limits := r.Requests, r.Limits
	if requests == nil && limits == nil {
		requests, limits = guardrailResources, guardrailResources
	}
	var missing []string
	for _, x := range []struct {
		field string
		names []string
	}{{"requests", requests}, {"limits", limits}} {
		for _, n := range x.names {
			missing = append(missing, fmt.Sprintf("!has(c.resources.%s) || !(%s in c.resources.%s)", x.field, lit(n), x.field))
		}
	}
	var vs validations
	if len(missing) > 0 {
		want := []string{}
		if len(requests) > 0 {
			want = append(want, "requests "+strings.Join(requests, ", "))
		}
		if len(limits) > 0 {
			want = append(want, "limits "+strings.Join(limits, ", "))
		}
		vs.variables = append(vs.variables, admissionv1.Variable{Name: "unlimited",
			Expression: "variables.containers.filter(c, !has(c.resources) || " + strings.Join(missing, " || ") + ").map(c, c.name)"})
		vs.rules = append(vs.rules, admissionv1.Validation{
			Expression: "size(variables.unlimited) == 0",
			MessageExpression: lit("guardrail "+r.Name+": container(s) ") + " + variables.unlimited.join(\", \") + " +
				lit(" must set resource "+strings.Join(want, " and ")),
			Reason: forbidden(),
		})
	}
	for _, m := range r.Maximums {
		var caps, said []string
		for _, x := range []struct{ name, max string }{{"cpu", m.CPU}, {"memory", m.Memory}} {
			if x.max == "" {
				continue
			}
			said = append(said, x.name+" "+x.max)
			for _, field := range []string{"requests", "limits"} {
				caps = append(caps, fmt.Sprintf("(!has(c.resources.%[1]s) || !(%[2]s in c.resources.%[1]s) || "+
					"quantity(string(c.resources.%[1]s[%[2]s])).compareTo(quantity(%[3]s)) <= 0)", field, lit(x.name), lit(x.max)))
			}
		}
		ns := append([]string(nil), m.Namespaces...)
		sort.Strings(ns)
		vs.rules = append(vs.rules, admissionv1.Validation{
			Expression: fmt.Sprintf("!(request.namespace in %s) || variables.containers.all(c, !has(c.resources) || (%s))",
				litList(ns), strings.Join(caps, " && ")),
			Message: fmt.Sprintf("guardrail %s: in namespace(s) %s, each container may request and be limited to at most %s",
				r.Name, strings.Join(ns, ", "), strings.Join(said, " and ")),
			Reason: forbidden(),
		})
	}
	return vs, nil
}

// hostAccessValidations lists what of the host a pod spec asks for; every field is tested with
// has() first, as pod specs leave out what is false.
func hostAccessValidations(r HostAccessGuardrail) validations {
	flag := func(field string) string {
		return fmt.Sprintf(`(has(variables.podSpec.%[1]s) && variables.podSpec.%[1]s ? [%[2]s] : [])`, field, lit(field))
	}
	return validations{
		variables: []admissionv1.Variable{{Name: "hostAccess", Expression: strings.Join([]string{
			`variables.containers.filter(c, has(c.securityContext) && has(c.securityContext.privileged) && c.securityContext.privileged).map(c, "privileged container " + c.name)`,
			`(has(variables.podSpec.volumes) ? variables.podSpec.volumes.filter(v, has(v.hostPath)).map(v, "hostPath volume " + v.name) : [])`,
			flag("hostNetwork"), flag("hostPID"), flag("hostIPC"),
		}, " + ")}},
		rules: []admissionv1.Validation{{
			Expression:        "size(variables.hostAccess) == 0",
			MessageExpression: lit("guardrail "+r.Name+": host access not allowed: ") + ` + variables.hostAccess.join(", ")`,
			Reason:            forbidden(),
		}},
	}
}

// Pod-template-hash suffixes use this alphabet (k8s.io/apimachinery/pkg/util/rand's
// SafeEncodeString); CronJobs name their Jobs with a number.
const (
	replicaSetSuffix = `^[bcdfghjklmnpqrstvwxz2456789]+$`
	jobSuffix        = `^[0-9]+$`
)

// exemptionCondition is a matchCondition true for every object no exemption covers, or "" if
// none is in force. Every field is tested with has() first: an evaluation error would refuse
// the request (failurePolicy Fail).
func exemptionCondition(es []Exemption) string {
	var terms []string
	for _, e := range es {
		var parts []string
		if e.Namespace != "" {
			parts = append(parts, "request.namespace == "+lit(e.Namespace))
		}
		if w := e.Workload; w != "" {
			owned := fmt.Sprintf(`r.name == %[1]s || (r.kind == "ReplicaSet" && r.name.startsWith(%[2]s) && `+
				`r.name.substring(%[3]d).matches(%[4]s)) || (r.kind == "Job" && r.name.startsWith(%[2]s) && r.name.substring(%[3]d).matches(%[5]s))`,
				lit(w), lit(w+"-"), len(w)+1, lit(replicaSetSuffix), lit(jobSuffix))
			parts = append(parts, fmt.Sprintf("((has(object.metadata.name) && object.metadata.name == %s) || "+
				"(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, %s)))", lit(w), owned))
		}
		terms = append(terms, "("+strings.Join(parts, " && ")+")")
	}
	if len(terms) == 0 {
		return ""
	}
	return "!(" + strings.Join(terms, " || ") + ")"
}

func networkPolicies(r NetworkGuardrail, ns string) []*networkingv1.NetworkPolicy {
	meta := func(flow string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: NetworkPolicyName(r.Name, flow), Namespace: ns,
			Labels: map[string]string{ManagedByLabel: ManagedByValue, GuardrailLabel: r.Name}}
	}
	tm := metav1.TypeMeta{APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "NetworkPolicy"}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	out := []*networkingv1.NetworkPolicy{{
		TypeMeta: tm, ObjectMeta: meta(""),
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: ingress},
	}}
	for _, f := range r.Allow {
		rule := networkingv1.NetworkPolicyIngressRule{}
		for _, p := range f.From {
			rule.From = append(rule.From, networkingv1.NetworkPolicyPeer{
				NamespaceSelector: p.NamespaceSelector.DeepCopy(), PodSelector: p.PodSelector.DeepCopy()})
		}
		for _, p := range f.Ports {
			proto := corev1.Protocol(p.Protocol)
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			port := p.Port
			rule.Ports = append(rule.Ports, networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port})
		}
		np := &networkingv1.NetworkPolicy{TypeMeta: tm, ObjectMeta: meta(f.Name), Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: ingress, Ingress: []networkingv1.NetworkPolicyIngressRule{rule}}}
		if f.PodSelector != nil {
			np.Spec.PodSelector = *f.PodSelector.DeepCopy()
		}
		out = append(out, np)
	}
	return out
}

// PlanNamespaceLabels compares the pod-security labels namespaces must carry with what they
// carry, and returns an update per namespace that differs. Only labels kaccess owns (named in
// PodSecurityOwnedLabel) are removed; a pod-security label someone else set is left alone,
// and said so in the details. Desired of each change is the namespace with its new labels.
func PlanNamespaceLabels(want map[string]map[string]string, namespaces []Namespace) Changes {
	var out Changes
	for _, ns := range namespaces {
		have := ns.Labels
		owned := map[string]bool{}
		if v := have[PodSecurityOwnedLabel]; v != "" {
			for _, m := range strings.Split(v, ".") {
				owned[podSecurityPrefix+m] = true
			}
		}
		w := want[ns.Name]
		next := maps.Clone(have)
		if next == nil {
			next = map[string]string{}
		}
		var details []string
		for k := range owned {
			if _, ok := w[k]; !ok {
				delete(next, k)
				details = append(details, "-"+k)
			}
		}
		var modes []string
		for _, k := range sortedKeys(w) {
			if k == PodSecurityOwnedLabel {
				continue
			}
			if cur, ok := have[k]; ok && !owned[k] {
				details = append(details, fmt.Sprintf("kept %s=%s set by someone else", k, cur))
				continue
			}
			modes = append(modes, strings.TrimPrefix(k, podSecurityPrefix))
			if have[k] != w[k] {
				next[k] = w[k]
				details = append(details, fmt.Sprintf("+%s=%s", k, w[k]))
			}
		}
		if len(modes) > 0 {
			next[PodSecurityOwnedLabel] = strings.Join(modes, ".")
		} else {
			delete(next, PodSecurityOwnedLabel)
		}
		if maps.Equal(next, have) || (len(next) == 0 && len(have) == 0) {
			continue
		}
		sort.Strings(details)
		if len(details) == 0 {
			details = []string{"labels changed"}
		}
		desired := &corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: next},
		}
		current := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: have}}
		out = append(out, Change{Action: ActionUpdate, Kind: "Namespace", Name: ns.Name, Details: details,
			Desired: desired, Current: current})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func forbidden() *metav1.StatusReason { return ptr(metav1.StatusReasonForbidden) }
