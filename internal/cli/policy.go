package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// ErrChangesPending is what `kaccess policy plan` returns when the cluster differs from the
// policy; ExitCode maps it to 2, so CI can tell "changes" from "failure".
var ErrChangesPending = errors.New("changes pending: the cluster does not match the policy")

// ExitCode is the process exit status for an error a command returned: 0 for nil, 2 for
// ErrChangesPending (the plan was printed, nothing failed), 1 for anything else.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrChangesPending):
		return 2
	default:
		return 1
	}
}

// planTimeout bounds reading the cluster.
const planTimeout = time.Minute

func newPolicyCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check an access policy file against a cluster",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPolicyPlanCommand(s))
	return cmd
}

type planOptions struct {
	file, kubeconfig, context, output string
}

func newPolicyPlanCommand(s Streams) *cobra.Command {
	var o planOptions
	cmd := &cobra.Command{
		Use:   "plan -f FILE",
		Short: "Print the RBAC and guardrail changes that applying an access policy would make, its escalation warnings and the workloads its guardrails would refuse",
		Long: `Load and validate an access policy file, read the cluster's namespaces and the RBAC objects
kaccess manages (labelled app.kubernetes.io/managed-by=kaccess and kaccess.io/policy-role) with
your kubeconfig, and print the exact changes the kaccess controller would make: + create,
~ update, -/+ replace (a binding whose roleRef changed), - delete. Roles offered for elevation are checked for escalation paths
(escalate/bind verbs, RBAC writes, serviceaccounts/token, secrets, ...) and listed as warnings.

Guardrails: the ValidatingAdmissionPolicies, bindings and NetworkPolicies kaccess manages
(labelled kaccess.io/guardrail) and the Pod Security labels of namespaces are planned the same
way. Then the workloads that run now (pods, deployments, statefulsets, daemonsets, replicasets,
jobs, cronjobs; objects a controller owns are judged through their owner) are evaluated with
the same CEL expressions the API server will run, and each one a guardrail would refuse (or warn
about) at its next create or update is listed. For new Pod Security labels, a server-side dry
run of the namespace patch returns Pod Security Admission's own list of violating pods.
Expired exemptions are listed as warnings. Nothing is written.

Your kubeconfig's user needs list on namespaces, clusterroles, roles, clusterrolebindings,
rolebindings, validatingadmissionpolicies, validatingadmissionpolicybindings and
networkpolicies (and get on roles an elevation refers to, to check them). Checking workloads
needs list on them (skipped with a note otherwise); the Pod Security dry run needs patch on
namespaces.

Exit status, for CI (like terraform plan -detailed-exitcode):
  0  no changes: the cluster matches the policy
  1  error: the policy is invalid or the cluster could not be read
  2  changes pending: the plan was printed`,
		Example: `  kaccess policy plan -f access-policy.yaml
  kaccess policy plan -f access-policy.yaml --context prod --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pending, err := runPlan(cmd.Context(), s, o)
			if err != nil {
				return err
			}
			if pending {
				return ErrChangesPending
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "the access policy file (required)")
	cmd.Flags().StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVar(&o.context, "context", "", "kubeconfig context to use (default: the current one)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	return cmd
}

// runPlan prints the plan and the warnings and reports whether changes are pending.
func runPlan(ctx context.Context, s Streams, o planOptions) (bool, error) {
	if o.file == "" {
		return false, errors.New("-f FILE is required: the access policy to plan")
	}
	if o.output != "text" && o.output != "json" {
		return false, fmt.Errorf("--output %q: want text or json", o.output)
	}
	data, err := os.ReadFile(o.file)
	if err != nil {
		return false, fmt.Errorf("read policy: %w", err)
	}
	p, err := policy.Load(data)
	if err != nil {
		return false, fmt.Errorf("%s is not a valid access policy:\n  %s", o.file,
			strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return false, fmt.Errorf("load kubeconfig: %w (choose one with --kubeconfig or $KUBECONFIG, a context with --context)", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, planTimeout)
	defer cancel()
	state, err := rbacsync.ReadState(ctx, client)
	if err == nil {
		state.Now = time.Now()
	}
	var changes policy.Changes
	if err == nil {
		changes, err = rbacsync.PlanFor(p, state)
	}
	if err != nil {
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w (your user needs list on namespaces, on RBAC objects and on "+
				"validatingadmissionpolicies, validatingadmissionpolicybindings and networkpolicies)", err)
		}
		return false, fmt.Errorf("read the cluster at %s: %w", cfg.Host, err)
	}
	fmt.Fprintf(s.Err, "Compared %s with the cluster at %s.\n", o.file, cfg.Host)
	warnings, notes := escalationWarnings(ctx, client, p)
	g := guardrailReport{warnings: p.GuardrailWarnings(state.Now)}
	g.findings, g.notes, err = rbacsync.CheckWorkloads(ctx, client, p, state)
	if err != nil {
		g.notes = append(g.notes, fmt.Sprintf("existing workloads not checked against the guardrails: %v", err))
	}
	g.podSecurity = podSecurityDryRun(ctx, cfg, changes)
	if o.output == "json" {
		return len(changes) > 0, writePlanJSON(s.Out, changes, warnings, notes, g)
	}
	if err := changes.Render(s.Out); err != nil {
		return false, err
	}
	g.render(s.Out)
	if len(warnings) > 0 || len(notes) > 0 {
		fmt.Fprintf(s.Out, "\nEscalation warnings for roles offered for elevation:\n")
		for _, w := range warnings {
			fmt.Fprintf(s.Out, "  ! %s\n", w)
		}
		for _, n := range notes {
			fmt.Fprintf(s.Out, "  ? %s\n", n)
		}
	}
	return len(changes) > 0, nil
}

// escalationWarnings returns policy.Warnings plus, for elevations offering a referenced role
// the policy cannot check offline, the findings in that role's rules as the cluster holds
// them. notes say which roles could not be read.
func escalationWarnings(ctx context.Context, client kubernetes.Interface, p *policy.Policy) ([]policy.Warning, []string) {
	warnings := p.Warnings()
	checked := map[string]bool{}
	for _, w := range warnings {
		checked[w.Path] = true
	}
	var notes []string
	for i, e := range p.Elevations {
		path := fmt.Sprintf("elevations[%d]", i)
		var ref *policy.RoleRef
		for _, r := range p.Roles {
			if r.Name == e.Role {
				ref = r.Ref
			}
		}
		if ref == nil || checked[path] {
			continue // curated (checked offline) or a well-known role already reported
		}
		var sources []ruleSource
		var err error
		switch ref.Kind {
		case policy.RefKindClusterRole:
			var cr *rbacv1.ClusterRole
			if cr, err = client.RbacV1().ClusterRoles().Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
				sources = append(sources, ruleSource{"", cr.Rules})
			}
		case policy.RefKindRole:
			for _, ns := range e.Namespaces {
				var r *rbacv1.Role
				if r, err = client.RbacV1().Roles(ns).Get(ctx, ref.Name, metav1.GetOptions{}); err != nil {
					break
				}
				sources = append(sources, ruleSource{" in " + ns, r.Rules})
			}
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s (%s) role %s: %s %s not checked: %v", path, e.Name, e.Role, ref.Kind, ref.Name, err))
			continue
		}
		seen := map[string]bool{}
		for _, src := range sources {
			for _, f := range policy.CheckEscalation(src.rules) {
				if seen[f.Class] {
					continue // one warning per class, not one per namespace
				}
				seen[f.Class] = true
				f.Reason += " (" + ref.Kind + " " + ref.Name + src.where + " as the cluster holds it)"
				warnings = append(warnings, policy.Warning{Elevation: e.Name, Role: e.Role, Path: path, Finding: f})
			}
		}
	}
	return warnings, notes
}

// ruleSource is a referenced role's rules as the cluster holds them, and where.
type ruleSource struct {
	where string
	rules []rbacv1.PolicyRule
}

type planJSON struct {
	Changes  []changeJSON   `json:"changes"`
	Summary  map[string]int `json:"summary"`
	Warnings []warningJSON  `json:"warnings"`
	Notes    []string       `json:"notes,omitempty"`
	// Guardrails holds what the guardrails would do to the workloads that run now.
	Guardrails guardrailsJSON `json:"guardrails"`
}

type changeJSON struct {
	Action    string   `json:"action"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	Details   []string `json:"details,omitempty"`
}

type warningJSON struct {
	Path      string `json:"path"`
	Elevation string `json:"elevation"`
	Role      string `json:"role"`
	Rule      int    `json:"rule"`
	Severity  string `json:"severity"`
	Class     string `json:"class"`
	Reason    string `json:"reason"`
}

func writePlanJSON(w io.Writer, changes policy.Changes, warnings []policy.Warning, notes []string, g guardrailReport) error {
	out := planJSON{Changes: []changeJSON{}, Summary: map[string]int{}, Warnings: []warningJSON{}, Notes: notes,
		Guardrails: g.json()}
	for _, a := range []policy.Action{policy.ActionCreate, policy.ActionUpdate, policy.ActionReplace, policy.ActionDelete} {
		out.Summary[string(a)] = changes.Counts()[a]
	}
	for _, c := range changes {
		out.Changes = append(out.Changes, changeJSON{Action: string(c.Action), Kind: c.Kind, Namespace: c.Namespace, Name: c.Name, Details: c.Details})
	}
	for _, wn := range warnings {
		out.Warnings = append(out.Warnings, warningJSON{Path: wn.Path, Elevation: wn.Elevation, Role: wn.Role, Rule: wn.Finding.Rule,
			Severity: string(wn.Finding.Severity), Class: wn.Finding.Class, Reason: wn.Finding.Reason})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
