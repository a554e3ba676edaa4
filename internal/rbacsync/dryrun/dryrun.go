// Package dryrun evaluates rendered guardrail ValidatingAdmissionPolicies against objects
// that already run, the way the API server would at their next create or update: the same
// CEL expressions (variables, matchConditions, validations, messageExpressions) in
// Kubernetes' own CEL environment (k8s.io/apiserver/pkg/cel/environment, with its libraries
// such as quantity() and the string extensions). `kaccess policy plan` uses it to list the
// workloads a guardrail would refuse. It is pure logic: no client.
package dryrun

import (
	"fmt"
	"sort"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kaccess/kaccess/internal/rbacsync/celenv"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// Workload is one object to judge, as unstructured JSON (apiVersion and kind set).
type Workload struct {
	// Resource is the plural resource name ("deployments"), matched against the policy's rules.
	Resource  string
	Namespace string
	Name      string
	Object    map[string]any
}

// Finding is a workload a guardrail would act on at its next create or update.
type Finding struct {
	Policy, Binding string
	// Actions are the binding's validationActions: Deny means it would be refused.
	Actions   []admissionv1.ValidationAction
	Kind      string
	Namespace string
	Name      string
	Message   string
}

// Refused reports whether the finding is a refusal (not a warning or an audit note).
func (f Finding) Refused() bool {
	for _, a := range f.Actions {
		if a == admissionv1.Deny {
			return true
		}
	}
	return false
}

// compiled is one policy ready to evaluate.
type compiled struct {
	pol        *admissionv1.ValidatingAdmissionPolicy
	variables  []namedProgram
	conditions []cel.Program
	rules      []rule
	resources  map[string]bool
}

type namedProgram struct {
	name string
	prg  cel.Program
}

type rule struct {
	expr, msg cel.Program // msg nil: use message
	message   string
}

func compile(_ *cel.Env, expr string) (cel.Program, error) { return celenv.Compile(expr) }

func compilePolicy(env *cel.Env, pol *admissionv1.ValidatingAdmissionPolicy) (*compiled, error) {
	c := &compiled{pol: pol, resources: map[string]bool{}}
	for i, v := range pol.Spec.Variables {
		prg, err := compile(env, v.Expression)
		if err != nil {
			return nil, fmt.Errorf("policy %s: variables[%d] (%s): %w", pol.Name, i, v.Name, err)
		}
		c.variables = append(c.variables, namedProgram{v.Name, prg})
	}
	for i, m := range pol.Spec.MatchConditions {
		prg, err := compile(env, m.Expression)
		if err != nil {
			return nil, fmt.Errorf("policy %s: matchConditions[%d]: %w", pol.Name, i, err)
		}
		c.conditions = append(c.conditions, prg)
	}
	for i, v := range pol.Spec.Validations {
		prg, err := compile(env, v.Expression)
		if err != nil {
			return nil, fmt.Errorf("policy %s: validations[%d]: %w", pol.Name, i, err)
		}
		r := rule{expr: prg, message: v.Message}
		if v.MessageExpression != "" {
			if r.msg, err = compile(env, v.MessageExpression); err != nil {
				return nil, fmt.Errorf("policy %s: validations[%d].messageExpression: %w", pol.Name, i, err)
			}
		}
		if r.message == "" {
			r.message = "failed expression: " + v.Expression
		}
		c.rules = append(c.rules, r)
	}
	if mc := pol.Spec.MatchConstraints; mc != nil {
		for _, rr := range mc.ResourceRules {
			for _, res := range rr.Resources {
				c.resources[res] = true
			}
		}
	}
	return c, nil
}

// Evaluate judges every workload against every policy whose binding selects the workload's
// namespace, as at an UPDATE of the object, and returns what each would do, sorted by
// namespace, name, policy. An expression that fails to evaluate counts as a refusal, as it
// does in the API server with failurePolicy Fail.
func Evaluate(objs *policy.GuardrailObjects, namespaces []policy.Namespace, workloads []Workload) ([]Finding, error) {
	env, err := celenv.Env()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	nsLabels := map[string]labels.Set{}
	for _, ns := range namespaces {
		nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	policies := map[string]*compiled{}
	for _, p := range objs.Policies {
		c, err := compilePolicy(env, p)
		if err != nil {
			return nil, err
		}
		policies[p.Name] = c
	}
	var out []Finding
	for _, b := range objs.Bindings {
		c := policies[b.Spec.PolicyName]
		if c == nil {
			continue
		}
		sel := labels.Everything()
		if mr := b.Spec.MatchResources; mr != nil && mr.NamespaceSelector != nil {
			if sel, err = metav1.LabelSelectorAsSelector(mr.NamespaceSelector); err != nil {
				return nil, fmt.Errorf("binding %s: namespaceSelector: %w", b.Name, err)
			}
		}
		for _, w := range workloads {
			if !c.resources[w.Resource] || !sel.Matches(nsLabels[w.Namespace]) {
				continue
			}
			msgs := c.judge(w)
			kind, _ := w.Object["kind"].(string)
			for _, m := range msgs {
				out = append(out, Finding{Policy: c.pol.Name, Binding: b.Name, Actions: b.Spec.ValidationActions,
					Kind: kind, Namespace: w.Namespace, Name: w.Name, Message: m})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Policy < b.Policy
	})
	return out, nil
}

// judge returns the messages of the validations w fails; none when it passes or a
// matchCondition excludes it (an exemption).
func (c *compiled) judge(w Workload) []string {
	request := map[string]any{
		"operation": "UPDATE", "namespace": w.Namespace, "name": w.Name,
		"resource": map[string]any{"resource": w.Resource},
	}
	vars := map[ref.Val]ref.Val{}
	act := map[string]any{
		"object": w.Object, "oldObject": w.Object, "request": request, "params": nil, "namespaceObject": nil,
		"variables": types.NewRefValMap(types.DefaultTypeAdapter, vars),
	}
	for _, v := range c.variables {
		val, _, err := v.prg.Eval(act)
		if err != nil {
			// The API server evaluates variables lazily: one that fails fails what uses it.
			val = types.NewErr("variables.%s: %v", v.name, err)
		}
		vars[types.String(v.name)] = val
	}
	for _, m := range c.conditions {
		val, _, err := m.Eval(act)
		if err != nil {
			return []string{fmt.Sprintf("matchCondition failed to evaluate: %v", err)}
		}
		if b, ok := val.Value().(bool); ok && !b {
			return nil
		}
	}
	var out []string
	for _, r := range c.rules {
		val, _, err := r.expr.Eval(act)
		if err != nil {
			out = append(out, fmt.Sprintf("expression failed to evaluate: %v", err))
			continue
		}
		if b, ok := val.Value().(bool); ok && b {
			continue
		}
		msg := r.message
		if r.msg != nil {
			if mv, _, err := r.msg.Eval(act); err == nil {
				if s, ok := mv.Value().(string); ok && s != "" {
					msg = s
				}
			}
		}
		out = append(out, msg)
	}
	return out
}

// FromTyped turns a typed object (a Pod, Deployment, ...) into a Workload; list items carry
// no apiVersion and kind, so they are given.
func FromTyped(resource, apiVersion, kind string, obj metav1.Object) (Workload, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return Workload{}, fmt.Errorf("%s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	u["apiVersion"], u["kind"] = apiVersion, kind
	return Workload{Resource: resource, Namespace: obj.GetNamespace(), Name: obj.GetName(), Object: u}, nil
}
