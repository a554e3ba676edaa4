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
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kaccess/kaccess/internal/config"
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
	// config is the gateway's configuration file (cluster names, labels, the default one).
	config, cluster string
	all             bool
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

Several clusters: with --config (the gateway's configuration file), the policy is planned as
the gateway's controller applies it to each cluster, with only the bindings, elevations and
guardrails that target it (clusters:, clusterSelector: over the config's clusters[].labels);
the default cluster unless --cluster NAME or --all. Each cluster is reached through the
kubeconfig context of its name. Output has one section per cluster (-o json: "clusters"); a
cluster that cannot be read shows as unreachable, and the command then exits 1.

Exit status, for CI (like terraform plan -detailed-exitcode):
  0  no changes: the cluster matches the policy
  1  error: the policy is invalid or a cluster could not be read
  2  changes pending: the plan was printed`,
		Example: `  kaccess policy plan -f access-policy.yaml
  kaccess policy plan -f access-policy.yaml --context prod --output json
  kaccess policy plan -f access-policy.yaml --config gateway.yaml --cluster prod-eu
  kaccess policy plan -f access-policy.yaml --config gateway.yaml --all -o json`,
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
	cmd.Flags().StringVar(&o.config, "config", "", "the gateway's configuration file: plan its clusters with their labels, each as the gateway's controller would (default cluster unless --cluster or --all)")
	cmd.Flags().StringVar(&o.cluster, "cluster", "", "with --config: plan this cluster, reached through the kubeconfig context of its name (or --context)")
	cmd.Flags().BoolVar(&o.all, "all", false, "with --config: plan every cluster, each through the kubeconfig context of its name")
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
	targets, err := planTargets(o)
	if err != nil {
		return false, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, planTimeout)
	defer cancel()
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	plans := make([]*clusterPlan, len(targets))
	for i, t := range targets {
		cp := &clusterPlan{target: t}
		plans[i] = cp
		pol := p
		if t.name != "" {
			pol = p.ForCluster(policy.Cluster{Name: t.name, Labels: t.labels})
		}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: t.context})
		cfg, err := cc.ClientConfig()
		if err != nil {
			cp.err = fmt.Errorf("load kubeconfig: %w (choose one with --kubeconfig or $KUBECONFIG, a context with --context)", err)
			if t.name != "" {
				cp.err = fmt.Errorf("cluster %s: no usable kubeconfig context %q (add one named like the cluster): %w", t.name, t.context, err)
			}
			continue
		}
		cp.host = cfg.Host
		cp.err = cp.run(ctx, cfg, pol)
	}
	if len(targets) == 1 && targets[0].name == "" {
		// Without the gateway's config: the plan as before, one cluster, the whole policy.
		cp := plans[0]
		if cp.err != nil {
			return false, cp.err
		}
		fmt.Fprintf(s.Err, "Compared %s with the cluster at %s.\n", o.file, cp.host)
		if o.output == "json" {
			return len(cp.changes) > 0, writePlanJSON(s.Out, cp.changes, cp.warnings, cp.notes, cp.guardrails)
		}
		return len(cp.changes) > 0, cp.render(s.Out)
	}
	return renderClusterPlans(s, o, plans)
}

// planTarget is one cluster to plan: its name and labels in the gateway's config (empty
// without --config) and the kubeconfig context that reaches it.
type planTarget struct {
	name, context string
	isDefault     bool
	labels        map[string]string
}

// planTargets picks the clusters to plan: without --config the kubeconfig's (--context)
// cluster with the whole policy; with it, --cluster NAME, every one (--all) or the default
// one, each reached through the kubeconfig context of its name (--context overrides for one).
func planTargets(o planOptions) ([]planTarget, error) {
	if o.config == "" {
		if o.cluster != "" || o.all {
			return nil, errors.New("--cluster and --all need --config, the gateway's configuration file: it names the clusters and gives them the labels the policy's clusterSelectors match")
		}
		return []planTarget{{context: o.context}}, nil
	}
	if o.cluster != "" && o.all {
		return nil, errors.New("set only one of --cluster and --all")
	}
	if o.all && o.context != "" {
		return nil, errors.New("--context chooses the context of one cluster: with --all each cluster is reached through the context of its name")
	}
	gc, err := config.Load(o.config)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", o.config, err)
	}
	var out []planTarget
	for _, c := range gc.Clusters {
		if o.all || c.Name == o.cluster || (o.cluster == "" && c.Default) {
			ctxName := c.Name
			if o.context != "" {
				ctxName = o.context
			}
			out = append(out, planTarget{name: c.Name, context: ctxName, isDefault: c.Default, labels: c.Labels})
		}
	}
	if len(out) == 0 {
		names := make([]string, len(gc.Clusters))
		for i, c := range gc.Clusters {
			names[i] = c.Name
		}
		return nil, fmt.Errorf("--cluster %q: %s has no such cluster (it has %s)", o.cluster, o.config, strings.Join(names, ", "))
	}
	return out, nil
}

// clusterPlan is the plan for one cluster, or why it could not be made.
type clusterPlan struct {
	target     planTarget
	host       string
	err        error // the cluster could not be read: no plan, nothing would be written there
	changes    policy.Changes
	warnings   []policy.Warning
	notes      []string
	guardrails guardrailReport
}

func (cp *clusterPlan) run(ctx context.Context, cfg *rest.Config, p *policy.Policy) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	state, err := rbacsync.ReadState(ctx, client)
	if err == nil {
		state.Now = time.Now()
		cp.changes, err = rbacsync.PlanFor(p, state)
	}
	if err != nil {
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w (your user needs list on namespaces, on RBAC objects and on "+
				"validatingadmissionpolicies, validatingadmissionpolicybindings and networkpolicies)", err)
		}
		return fmt.Errorf("read the cluster at %s: %w", cfg.Host, err)
	}
	cp.warnings, cp.notes = escalationWarnings(ctx, client, p)
	g := guardrailReport{warnings: p.GuardrailWarnings(state.Now)}
	g.findings, g.notes, err = rbacsync.CheckWorkloads(ctx, client, p, state)
	if err != nil {
		g.notes = append(g.notes, fmt.Sprintf("existing workloads not checked against the guardrails: %v", err))
	}
	g.podSecurity = podSecurityDryRun(ctx, cfg, cp.changes)
	cp.guardrails = g
	return nil
}

func (cp *clusterPlan) render(w io.Writer) error {
	if err := cp.changes.Render(w); err != nil {
		return err
	}
	cp.guardrails.render(w)
	if len(cp.warnings) > 0 || len(cp.notes) > 0 {
		fmt.Fprintf(w, "\nEscalation warnings for roles offered for elevation:\n")
		for _, wn := range cp.warnings {
			fmt.Fprintf(w, "  ! %s\n", wn)
		}
		for _, n := range cp.notes {
			fmt.Fprintf(w, "  ? %s\n", n)
		}
	}
	return nil
}

// errClustersUnreachable is returned (exit 1) after the plans of the clusters that could be
// read were printed.
var errClustersUnreachable = errors.New("some clusters could not be read: their plans are missing")

// renderClusterPlans prints one section per cluster; a cluster that could not be read shows
// as unreachable and makes the command fail once the others are printed.
func renderClusterPlans(s Streams, o planOptions, plans []*clusterPlan) (bool, error) {
	pending, unreachable := false, 0
	for _, cp := range plans {
		if cp.err != nil {
			unreachable++
		} else if len(cp.changes) > 0 {
			pending = true
		}
	}
	if o.output == "json" {
		out := multiPlanJSON{Clusters: []clusterPlanJSON{}}
		for _, cp := range plans {
			cj := clusterPlanJSON{Name: cp.target.name, Default: cp.target.isDefault, Server: cp.host, Reachable: cp.err == nil}
			if cp.err != nil {
				cj.Error = cp.err.Error()
			} else {
				pj := planJSONOf(cp.changes, cp.warnings, cp.notes, cp.guardrails)
				cj.Plan = &pj
			}
			out.Clusters = append(out.Clusters, cj)
		}
		enc := json.NewEncoder(s.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return false, err
		}
	} else {
		for i, cp := range plans {
			if i > 0 {
				fmt.Fprintln(s.Out)
			}
			def := ""
			if cp.target.isDefault {
				def = " (default)"
			}
			if cp.err != nil {
				fmt.Fprintf(s.Out, "=== cluster %s%s: UNREACHABLE, not planned: %v\n", cp.target.name, def, cp.err)
				continue
			}
			fmt.Fprintf(s.Out, "=== cluster %s%s at %s\n", cp.target.name, def, cp.host)
			if err := cp.render(s.Out); err != nil {
				return false, err
			}
		}
	}
	fmt.Fprintf(s.Err, "Compared %s with %d cluster(s) of %s; %d unreachable.\n", o.file, len(plans), o.config, unreachable)
	if unreachable > 0 {
		return false, errClustersUnreachable
	}
	return pending, nil
}

type multiPlanJSON struct {
	Clusters []clusterPlanJSON `json:"clusters"`
}

type clusterPlanJSON struct {
	Name      string `json:"name"`
	Default   bool   `json:"default"`
	Server    string `json:"server,omitempty"`
	Reachable bool   `json:"reachable"`
	// Error says why the cluster could not be read; Plan is then absent.
	Error string    `json:"error,omitempty"`
	Plan  *planJSON `json:"plan,omitempty"`
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
	out := planJSONOf(changes, warnings, notes, g)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func planJSONOf(changes policy.Changes, warnings []policy.Warning, notes []string, g guardrailReport) planJSON {
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
	return out
}
