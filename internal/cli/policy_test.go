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
