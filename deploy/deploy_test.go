// Package deploy holds what an operator applies; its test proves the manifests are accepted by
// a real API server and that the gateway configuration they carry is valid.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithCluster(m)) }

func TestManifestsApplyToARealAPIServer(t *testing.T) {
	c := testenv.Shared(t)
	kubeconfig := c.MustKubeconfig(t, testenv.AdminUser, c.AdminToken)
	for _, f := range []string{"kubernetes/rbac.yaml", "kubernetes/gateway.yaml"} {
		out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", f).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl apply --dry-run=server -f %s: %v\n%s", f, err, out)
		}
	}
}

func TestShippedGatewayConfigIsValid(t *testing.T) {
	f, err := os.Open(filepath.Join("kubernetes", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	found := false
	for {
		var cm corev1.ConfigMap
		if err := dec.Decode(&cm); err != nil {
			break
		}
		if cm.Kind != "ConfigMap" {
			continue
		}
		found = true
		cfg, err := config.Parse([]byte(cm.Data["gateway.yaml"]))
		if err != nil {
			t.Fatalf("the shipped gateway.yaml does not load: %v", err)
		}
		if !strings.HasPrefix(cfg.Session.KeysDir, "/etc/kaccess/") || !cfg.Clusters[0].InCluster {
			t.Errorf("shipped config: keys %q, inCluster %v", cfg.Session.KeysDir, cfg.Clusters[0].InCluster)
		}
	}
	if !found {
		t.Fatal("no ConfigMap with gateway.yaml in kubernetes/gateway.yaml")
	}
}

// The API server's audit setup in kubernetes/apiserver-audit loads as kube-apiserver loads it:
// the policy with k8s.io/apiserver's own loader (the gateway's end-to-end test runs a real
// API server with it), the webhook kubeconfig with client-go's.
func TestAPIServerAuditSetupLoads(t *testing.T) {
	if _, err := event.LoadPolicyFile(filepath.Join("kubernetes", "apiserver-audit", "audit-policy.yaml")); err != nil {
		t.Fatalf("audit policy: %v", err)
	}
	kc, err := clientcmd.LoadFromFile(filepath.Join("kubernetes", "apiserver-audit", "audit-webhook.kubeconfig"))
	if err != nil {
		t.Fatalf("webhook kubeconfig: %v", err)
	}
	cl := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]
	if cl == nil || !strings.Contains(cl.Server, "/audit-webhook/") || kc.AuthInfos["kube-apiserver"].TokenFile == "" {
		t.Fatalf("webhook kubeconfig: cluster %+v", cl)
	}
}
