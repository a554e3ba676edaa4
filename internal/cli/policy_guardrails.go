package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kaccess/kaccess/internal/rbacsync/dryrun"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// guardrailReport is the guardrail part of a plan: what the guardrails would do to the
// workloads that run now, and what could not be checked.
type guardrailReport struct {
	warnings []string // policy.GuardrailWarnings: expired exemptions
	findings []dryrun.Finding
	// podSecurity are the API server's own warnings for the Pod Security labels the plan
	// would set (a server-side dry run: Pod Security Admission lists the pods that violate).
	podSecurity []nsWarning
	notes       []string
}

type nsWarning struct{ Namespace, Warning string }

func (g guardrailReport) render(w io.Writer) {
	var b strings.Builder
	if len(g.warnings) > 0 {
		b.WriteString("\nGuardrail warnings:\n")
		for _, x := range g.warnings {
			fmt.Fprintf(&b, "  ! %s\n", x)
		}
	}
	if len(g.findings) > 0 || len(g.podSecurity) > 0 {
		b.WriteString("\nExisting workloads the guardrails would refuse or warn about at their next create or update:\n")
		for _, f := range g.findings {
			mode := "warn "
			if f.Refused() {
				mode = "REFUSE"
			}
			fmt.Fprintf(&b, "  %s %s %s/%s (%s): %s\n", mode, f.Kind, f.Namespace, f.Name, f.Policy, f.Message)
		}
		for _, x := range g.podSecurity {
			fmt.Fprintf(&b, "  podsec namespace %s: %s\n", x.Namespace, x.Warning)
		}
	}
	for _, n := range g.notes {
		fmt.Fprintf(&b, "  ? %s\n", n)
	}
	_, _ = io.WriteString(w, b.String())
}

type guardrailsJSON struct {
	Warnings    []string          `json:"warnings"`
	Workloads   []workloadJSON    `json:"workloads"`
	PodSecurity []podSecurityJSON `json:"podSecurity"`
	Notes       []string          `json:"notes,omitempty"`
}

type workloadJSON struct {
	Policy    string   `json:"policy"`
	Binding   string   `json:"binding"`
	Actions   []string `json:"validationActions"`
	Refused   bool     `json:"refused"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Message   string   `json:"message"`
}

type podSecurityJSON struct {
	Namespace string `json:"namespace"`
	Warning   string `json:"warning"`
}

func (g guardrailReport) json() guardrailsJSON {
	out := guardrailsJSON{Warnings: append([]string{}, g.warnings...), Workloads: []workloadJSON{},
		PodSecurity: []podSecurityJSON{}, Notes: g.notes}
	for _, f := range g.findings {
		var actions []string
		for _, a := range f.Actions {
			actions = append(actions, string(a))
		}
		out.Workloads = append(out.Workloads, workloadJSON{Policy: f.Policy, Binding: f.Binding, Actions: actions,
			Refused: f.Refused(), Kind: f.Kind, Namespace: f.Namespace, Name: f.Name, Message: f.Message})
	}
	for _, x := range g.podSecurity {
		out.PodSecurity = append(out.PodSecurity, podSecurityJSON(x))
	}
	return out
}

// warningCollector keeps the Warning headers of a client's responses.
type warningCollector struct {
	mu   sync.Mutex
	text []string
}

func (c *warningCollector) HandleWarningHeader(_ int, _ string, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.text = append(c.text, text)
}

func (c *warningCollector) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.text
	c.text = nil
	return out
}

// podSecurityDryRun sends each planned namespace label change as a server-side dry run
// (nothing is written): Pod Security Admission answers a new enforce level with a warning per
// existing pod that violates it. Without patch on namespaces the check is skipped with a note.
func podSecurityDryRun(ctx context.Context, cfg *rest.Config, changes policy.Changes) []nsWarning {
	var out []nsWarning
	collector := &warningCollector{}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = collector
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return []nsWarning{{Warning: fmt.Sprintf("pod security not checked: %v", err)}}
	}
	for _, c := range changes {
		if c.Kind != "Namespace" || c.Desired == nil {
			continue
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": c.Desired.GetLabels()}})
		if err != nil {
			continue
		}
		_, err = client.CoreV1().Namespaces().Patch(ctx, c.Name, types.MergePatchType, body,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			out = append(out, nsWarning{c.Name, fmt.Sprintf("pod security not checked (a dry-run patch of the namespace labels failed): %v", err)})
			continue
		}
		for _, w := range collector.take() {
			out = append(out, nsWarning{c.Name, w})
		}
	}
	return out
}
