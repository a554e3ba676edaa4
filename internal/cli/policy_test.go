package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

// A real kube-apiserver for `kaccess policy plan`; the other tests of the package ignore it.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithCluster())) }

const planPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: plan-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get", "list"]
  - name: plan-breakglass
    rules:
      - apiGroups: [""]
        resources: ["secrets"]
        verbs: ["get"]
bindings:
  - name: plan-devs
    groups: ["corp:plan-devs"]
    role: plan-reader
    namespaces: ["plan-a"]
  - name: plan-all
    groups: ["corp:plan-sre"]
    role: plan-reader
    clusterWide: true
elevations:
  - name: secrets
    role: plan-breakglass
    namespaces: ["plan-a"]
    requesters: ["corp:plan-devs"]
    approvers: ["corp:plan-sre"]
    maxDuration: 1h
`

// plan runs `kaccess policy plan` with args and returns stdout, stderr and the exit code.
func plan(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCommand(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut}, "test")
	root.SetArgs(append([]string{"policy", "plan"}, args...))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), ExitCode(err)
}

func TestPolicyPlanAgainstARealCluster(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "plan-a")
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(planPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.MustKubeconfig(t, testenv.AdminUser, c.AdminToken)
	removeManaged(t, c, "plan-a") // from an earlier run in this binary (go test -count=N)
	t.Cleanup(func() { removeManaged(t, c, "plan-a") })

	out, errOut, code := plan(t, "-f", file, "--kubeconfig", kubeconfig)
	want := `+ create ClusterRole kaccess:plan-breakglass
+ create ClusterRole kaccess:plan-reader
+ create ClusterRoleBinding kaccess:plan-all:plan-reader
+ create RoleBinding plan-a/kaccess:plan-devs:plan-reader
Plan: 4 to create, 0 to update, 0 to replace, 0 to delete.

Escalation warnings for roles offered for elevation:
  ! elevations[0] (secrets) role plan-breakglass rules[0]: high: reading secrets exposes service account tokens and credentials of other identities
`
	if code != 2 || out != want {
		t.Fatalf("exit %d, stdout\n%s\nwant exit 2 and\n%s\nstderr: %s", code, out, want, errOut)
	}

	out, _, code = plan(t, "-f", file, "--kubeconfig", kubeconfig, "-o", "json")
	var got struct {
		Changes  []struct{ Action, Kind, Namespace, Name string }
		Summary  map[string]int
		Warnings []struct{ Path, Severity, Class string }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if code != 2 || len(got.Changes) != 4 || got.Summary["create"] != 4 || len(got.Warnings) != 1 || got.Warnings[0].Class != "secrets-read" {
		t.Fatalf("json: exit %d, %+v", code, got)
	}

	// Apply it as the controller would, then the plan is empty.
	p, err := policy.Load([]byte(planPolicy))
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := rbacsync.New(rbacsync.Config{Client: c.AdminClient(), Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = plan(t, "-f", file, "--kubeconfig", kubeconfig)
	if code != 0 || !strings.HasPrefix(out, "No changes: the cluster matches the policy.\n") {
		t.Fatalf("after apply: exit %d, stdout\n%s\nstderr: %s", code, out, errOut)
	}
}

// removeManaged deletes the objects kaccess manages cluster-wide and in namespace.
func removeManaged(t *testing.T, c *testenv.Cluster, namespace string) {
	t.Helper()
	ctx, rbac := context.Background(), c.AdminClient().RbacV1()
	sel := metav1.ListOptions{LabelSelector: rbacsync.ManagedSelector}
	if err := errors.Join(
		rbac.ClusterRoles().DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
		rbac.ClusterRoleBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
		rbac.RoleBindings(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel),
	); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyPlanErrors(t *testing.T) {
	c := testenv.Shared(t)
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte(`apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
bindings:
  - name: devs
    groups: ["corp:devs"]
    role: nope
    namespaces: ["a"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	valid := filepath.Join(dir, "valid.yaml")
	if err := os.WriteFile(valid, []byte(planPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// The gateway's own identity may list RBAC objects; an unknown token may not.
	anonymous := c.MustKubeconfig(t, "nobody", "not-a-valid-token")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file", nil, "-f FILE is required"},
		{"invalid policy", []string{"-f", invalid}, `bindings[0].role: unknown role "nope"`},
		{"missing file", []string{"-f", filepath.Join(dir, "missing.yaml")}, "read policy"},
		{"cluster refuses", []string{"-f", valid, "--kubeconfig", anonymous}, "read the cluster at " + c.URL},
		{"bad output", []string{"-f", valid, "-o", "yaml"}, `--output "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := plan(t, tt.args...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q, want exit 1 and %q (stdout %q)", code, errOut, tt.want, out)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{ErrChangesPending, 2},
		{fmt.Errorf("plan: %w", ErrChangesPending), 2},
		{errors.New("boom"), 1},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

const planGuardrailPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
guardrails:
  images:
  - name: plan-registries
    mode: deny
    namespaces: [plan-g]
    allowed: ["registry.example.com/"]
  podSecurity:
  - name: plan-baseline
    mode: deny
    level: baseline
    namespaces: [plan-g]
  exemptions:
  - guardrails: [plan-registries]
    workload: gone
    reason: expired long ago
    expires: "2001-01-01T00:00:00Z"
`

func TestPolicyPlanGuardrails(t *testing.T) {
	c := testenv.Shared(t)
	ctx := context.Background()
	c.MustNamespace(t, "plan-g")
	admin := c.AdminClient()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := admin.CoreV1().ServiceAccounts("plan-g").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dep := func(name, image string) *appsv1.Deployment {
		l := map[string]string{"app": name}
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}},
		}}
	}
	for _, d := range []*appsv1.Deployment{dep("old-web", "docker.io/nginx:1.25"), dep("new-web", "registry.example.com/web:2")} {
		if _, err := admin.AppsV1().Deployments("plan-g").Create(ctx, d, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	hostPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "host-pod"}, Spec: corev1.PodSpec{HostNetwork: true,
		Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/agent:1"}}}}
	if _, err := admin.CoreV1().Pods("plan-g").Create(ctx, hostPod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(planGuardrailPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.MustKubeconfig(t, testenv.AdminUser, c.AdminToken)

	out, errOut, code := plan(t, "-f", file, "--kubeconfig", kubeconfig)
	for _, want := range []string{
		"+ create ValidatingAdmissionPolicy kaccess-plan-registries\n",
		"+ create ValidatingAdmissionPolicyBinding kaccess-plan-registries\n",
		"~ update Namespace plan-g (+pod-security.kubernetes.io/enforce=baseline)\n",
		"Plan: 2 to create, 1 to update, 0 to replace, 0 to delete.\n",
		"  ! guardrails.exemptions[0].expires: expired at 2001-01-01T00:00:00Z",
		"  REFUSE Deployment plan-g/old-web (kaccess-plan-registries): guardrail plan-registries: image(s) docker.io/nginx:1.25 not from an allowed registry (registry.example.com/)\n",
		`  podsec namespace plan-g: existing pods in namespace "plan-g" violate the new PodSecurity enforce level "baseline:latest"`,
		"host-pod: host namespaces",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s\nstderr: %s", want, out, errOut)
		}
	}
	if code != 2 || strings.Contains(out, "new-web") {
		t.Errorf("exit %d (want 2), or the allowed deployment is listed:\n%s", code, out)
	}

	out, _, _ = plan(t, "-f", file, "--kubeconfig", kubeconfig, "-o", "json")
	var got struct {
		Guardrails struct {
			Warnings  []string
			Workloads []struct {
				Policy, Kind, Namespace, Name, Message string
				Refused                                bool
			}
			PodSecurity []struct{ Namespace, Warning string }
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	w := got.Guardrails.Workloads
	if len(w) != 1 || !w[0].Refused || w[0].Name != "old-web" || w[0].Policy != "kaccess-plan-registries" ||
		len(got.Guardrails.Warnings) != 1 || len(got.Guardrails.PodSecurity) == 0 {
		t.Errorf("json guardrails: %+v", got.Guardrails)
	}
	// Nothing was written: a dry run.
	ns, err := admin.CoreV1().Namespaces().Get(ctx, "plan-g", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, set := ns.Labels["pod-security.kubernetes.io/enforce"]; set {
		t.Errorf("plan wrote the namespace labels: %v", ns.Labels)
	}
}
