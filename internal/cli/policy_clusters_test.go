package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kaccess/kaccess/internal/testenv"
)

const clustersPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: mc-reader
    rules:
      - apiGroups: [""]
        resources: ["configmaps"]
        verbs: ["get"]
bindings:
  - name: mc-prod
    groups: ["corp:mc-prod"]
    role: mc-reader
    clusterWide: true
    clusterSelector: {matchLabels: {env: prod}}
  - name: mc-gone
    groups: ["corp:mc-gone"]
    role: mc-reader
    clusterWide: true
    clusters: [gone]
`

// TestPolicyPlanSeveralClusters plans a real cluster ("live", env=prod) and one nobody
// answers for ("gone") from one gateway config.
func TestPolicyPlanSeveralClusters(t *testing.T) {
	c := testenv.Shared(t)
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	gatewayFile := filepath.Join(dir, "gateway.yaml")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	mustWrite(t, policyFile, clustersPolicy)
	mustWrite(t, gatewayFile, `
clusters:
  - name: live
    kubeconfig: /etc/kaccess/live.kubeconfig
    labels: {env: prod}
  - name: gone
    kubeconfig: /etc/kaccess/gone.kubeconfig
`)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["live"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CAData}
	kc.Clusters["gone"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", CertificateAuthorityData: c.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.AdminToken}
	kc.Contexts["live"] = &clientcmdapi.Context{Cluster: "live", AuthInfo: "admin"}
	kc.Contexts["gone"] = &clientcmdapi.Context{Cluster: "gone", AuthInfo: "admin"}
	kc.CurrentContext = "live"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	base := []string{"-f", policyFile, "--kubeconfig", kubeconfig, "--config", gatewayFile}

	// The default cluster (live): only what targets it.
	out, errOut, code := plan(t, base...)
	if code != 2 || !strings.HasPrefix(out, "=== cluster live (default) at "+c.URL+"\n") ||
		!strings.Contains(out, "+ create ClusterRoleBinding kaccess:mc-prod:mc-reader\n") || strings.Contains(out, "mc-gone") {
		t.Fatalf("default cluster: exit %d, stdout\n%s\nstderr: %s", code, out, errOut)
	}

	// Every cluster: gone is reported as unreachable, live is still planned, exit 1.
	out, errOut, code = plan(t, append(base, "--all", "-o", "json")...)
	var got struct {
		Clusters []struct {
			Name      string
			Default   bool
			Reachable bool
			Error     string
			Plan      *struct {
				Changes []struct{ Action, Kind, Name string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json output: %v\n%s\nstderr: %s", err, out, errOut)
	}
	if code != 1 || len(got.Clusters) != 2 {
		t.Fatalf("--all: exit %d, %+v\nstderr: %s", code, got, errOut)
	}
	live, gone := got.Clusters[0], got.Clusters[1]
	if live.Name != "live" || !live.Default || !live.Reachable || live.Plan == nil {
		t.Fatalf("live: %+v", live)
	}
	names := map[string]bool{}
	for _, ch := range live.Plan.Changes {
		names[ch.Kind+" "+ch.Name] = true
	}
	if !names["ClusterRoleBinding kaccess:mc-prod:mc-reader"] || names["ClusterRoleBinding kaccess:mc-gone:mc-reader"] {
		t.Errorf("live's changes: %v", names)
	}
	if gone.Name != "gone" || gone.Reachable || gone.Plan != nil || !strings.Contains(gone.Error, "127.0.0.1:1") {
		t.Errorf("gone: %+v", gone)
	}

	out, _, code = plan(t, append(base, "--cluster", "gone")...)
	if code != 1 || !strings.HasPrefix(out, "=== cluster gone: UNREACHABLE, not planned: ") {
		t.Errorf("--cluster gone: exit %d, stdout\n%s", code, out)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", policyFile, "--kubeconfig", kubeconfig, "--all"}, "--cluster and --all need --config"},
		{append(base, "--cluster", "nope"), `--cluster "nope": ` + gatewayFile + ` has no such cluster (it has live, gone)`},
		{append(base, "--cluster", "live", "--all"), "set only one of --cluster and --all"},
	} {
		if _, errOut, code := plan(t, tt.args...); code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("plan %v: exit %d, stderr %s, want %q", tt.args, code, errOut, tt.want)
		}
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
