// Command devenv is `make run`: a local kube-apiserver with the gateway in front of it, a Samba
// Active Directory with demo users in nested groups, their RBAC, and what to type, until Ctrl-C.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

const (
	stateDir    = ".run"
	gatewayAddr = "127.0.0.1:6443"
	opsAddr     = "127.0.0.1:9090"
	demoNS      = "demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, _ := filepath.Abs(stateDir)
	if err := checkFree(gatewayAddr, opsAddr); err != nil {
		return err
	}

	// The API server sends its own audit events to the gateway (deploy/kubernetes/apiserver-audit),
	// so requests made around the gateway are on the record too.
	webhookArgs, webhookToken, err := apiServerAudit(root)
	if err != nil {
		return err
	}
	fmt.Println(">> starting etcd and kube-apiserver (a few seconds)")
	cluster, err := testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(root, "cluster"), APIServerArgs: webhookArgs})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	if err := cluster.WriteKubeconfig(filepath.Join(root, "admin.kubeconfig"), "kaccess-admin", cluster.AdminToken); err != nil {
		return err
	}
	if err := demoRBAC(ctx, cluster); err != nil {
		return err
	}

	fmt.Println(">> starting a Samba Active Directory domain controller with demo users (about 10 seconds)")
	ad, err := testenv.StartAD(ctx, testenv.ADConfig{Dir: filepath.Join(root, "ad")})
	if err != nil {
		return err
	}
	defer ad.Stop()
	if err := demoDirectory(ctx, ad); err != nil {
		return err
	}
	bindPasswordFile := filepath.Join(root, "ad-bind-password")
	if err := os.WriteFile(bindPasswordFile, []byte(ad.ServicePassword), 0o600); err != nil {
		return err
	}

	fmt.Println(">> starting the gateway")
	policyPath := filepath.Join(root, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(demoPolicy), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "gateway.yaml")
	cfg := fmt.Sprintf(`# Written by make run. See README.md for every field.
listen:
  address: %q
  opsAddress: %q
stateDir: %q
clusters:
  - name: local
    server: %q
    caFile: %q
    tokenFile: %q
directories:
  - name: corp
    type: activedirectory
    urls: [%q]
    caFile: %q
    bindDN: %q
    bindPasswordFile: %q
    userBaseDN: %q
access:
  policyFile: %q
audit:
  auditorGroups: ["corp:team-leads"]
  webhook:
    tokenFile: %q
log:
  level: info
`, gatewayAddr, opsAddr, filepath.Join(root, "gateway"), cluster.URL, cluster.CAFile, cluster.GatewayTokenFile,
		ad.URL, ad.CAFile, ad.ServiceDN, bindPasswordFile, ad.BaseDN, policyPath, webhookToken)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(root, "gateway.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	gw := exec.Command(filepath.Join("bin", "gateway"), "serve", "--config", cfgPath)
	gw.Stdout, gw.Stderr = logFile, logFile
	gw.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := gw.Start(); err != nil {
		return fmt.Errorf("start bin/gateway (run `make build`): %w", err)
	}
	defer func() {
		_ = gw.Process.Signal(syscall.SIGTERM)
		_ = gw.Wait()
	}()
	if err := waitReady(ctx, "http://"+opsAddr+"/readyz"); err != nil {
		return fmt.Errorf("%w; see %s", err, logFile.Name())
	}

	ca, err := os.ReadFile(filepath.Join(root, "gateway", "tls", "ca.crt"))
	if err != nil {
		return err
	}
	// bob also gets a token minted by the operator command, for trying the proxy without a login.
	token, err := mint(cfgPath, "bob", nil)
	if err != nil {
		return err
	}
	if err := writeKubeconfig(filepath.Join(root, "bob.kubeconfig"), "bob", token, ca); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "ca.crt"), ca, 0o644); err != nil {
		return err
	}
	rel := func(name string) string { return filepath.Join(stateDir, name) }
	server := "https://" + gatewayAddr
	fmt.Printf(`
kaccess is running.
  gateway          %s   (metrics: http://%s/metrics, log: %s)
  kube-apiserver   %s   (admin kubeconfig: %s)
  Active Directory %s   (realm CORP.EXAMPLE.COM, login source "corp")

Demo users in AD:
  alice / %s   in team-a, which is in developers, which is in engineering; the access
                         policy (%s) binds corp:engineering to a role in namespace %q
  carol (same password)  in team-leads: approves elevations
  bob                    no groups, no RBAC (a token for him is in %s)

Try:
  bin/kaccess login --server %s --ca-file %s --username alice
  bin/kaccess kubeconfig --server %s --kubeconfig %s --namespace demo
  KUBECONFIG=%s kubectl create configmap hello --from-literal=greeting=hi
  KUBECONFIG=%s kubectl auth whoami              # alice with all three nested groups
  kubectl --kubeconfig %s -n demo get configmaps   # refused: bob has no role

Ask for more, and let carol approve it:
  bin/kaccess request create read-secrets --for 15m --reason "look at a secret"   # prints its name
  KACCESS_HOME=%s bin/kaccess login --server %s --ca-file %s --username carol
  KACCESS_HOME=%s bin/kaccess request approve NAME
  KUBECONFIG=%s kubectl get secrets            # allowed until the grant expires
  bin/kaccess grants                                                   # time left
  bin/kaccess policy plan -f %s --kubeconfig %s   # the cluster matches the policy

Every request is recorded in the embedded audit store under %s; team leads are auditors:
  KACCESS_HOME=%s bin/kaccess audit search --since 1h --filter 'user = "alice"'
  KACCESS_HOME=%s bin/kaccess audit detect --since 24h

The API server sends its own audit events too, so going around the gateway is on record:
  kubectl --kubeconfig %s -n demo create configmap direct-change
  KACCESS_HOME=%s bin/kaccess audit search --since 1h --filter 'source = "apiserver" AND user = "kaccess-admin"'
  KACCESS_HOME=%s bin/kaccess audit detect --since 1h --name gateway-bypass

Stop with Ctrl-C.
`, server, opsAddr, rel("gateway.log"), cluster.URL, rel("admin.kubeconfig"), ad.URL,
		demoPassword, rel("policy.yaml"), demoNS, rel("bob.kubeconfig"),
		server, rel("ca.crt"), server, rel("kubeconfig"), rel("kubeconfig"), rel("kubeconfig"), rel("bob.kubeconfig"),
		rel("carol"), server, rel("ca.crt"), rel("carol"), rel("kubeconfig"), rel("policy.yaml"), rel("admin.kubeconfig"),
		rel("gateway/audit"), rel("carol"), rel("carol"), rel("admin.kubeconfig"), rel("carol"), rel("carol"))

	done := make(chan error, 1)
	go func() { done <- gw.Wait() }()
	select {
	case <-ctx.Done():
		fmt.Println("\n>> stopping")
	case err := <-done:
		return fmt.Errorf("the gateway exited: %v; see %s", err, logFile.Name())
	}
	return nil
}

// apiServerAudit prepares the API server's audit webhook to the gateway: the gateway's CA made
// ahead (the gateway keeps it), a token, the webhook kubeconfig, and the flags with the policy
// from deploy/. It returns the flags and the token file for the gateway's config.
func apiServerAudit(root string) (args []string, tokenFile string, err error) {
	_, _, caPEM, err := tlsutil.EnsureSelfSigned(filepath.Join(root, "gateway", "tls"), []string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		return nil, "", err
	}
	tokenFile = filepath.Join(root, "audit-webhook-token")
	if _, err := os.Stat(tokenFile); err != nil {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		if err := os.WriteFile(tokenFile, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			return nil, "", err
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kaccess"] = &clientcmdapi.Cluster{Server: "https://" + gatewayAddr + "/audit-webhook/local", CertificateAuthorityData: caPEM}
	kc.AuthInfos["kube-apiserver"] = &clientcmdapi.AuthInfo{TokenFile: tokenFile}
	kc.Contexts["kaccess"] = &clientcmdapi.Context{Cluster: "kaccess", AuthInfo: "kube-apiserver"}
	kc.CurrentContext = "kaccess"
	webhookConfig := filepath.Join(root, "audit-webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, webhookConfig); err != nil {
		return nil, "", err
	}
	policy, err := filepath.Abs(filepath.Join("deploy", "kubernetes", "apiserver-audit", "audit-policy.yaml"))
	if err != nil {
		return nil, "", err
	}
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-webhook-config-file=" + webhookConfig,
		"--audit-webhook-batch-max-wait=2s",
		"--audit-webhook-initial-backoff=30s",
		"--audit-log-path=" + filepath.Join(root, "apiserver-audit.log"),
		"--audit-log-format=json",
	}, tokenFile, nil
}

// demoPassword is alice's password in the demo directory (a throwaway domain on loopback).
const demoPassword = "Demo-Passw0rd"

// demoDirectory makes alice a member of corp:engineering through two levels of nesting.
func demoDirectory(ctx context.Context, ad *testenv.AD) error {
	steps := []func() error{
		func() error { return ad.CreateUser(ctx, "alice", demoPassword) },
		func() error { return ad.CreateUser(ctx, "bob", demoPassword) },
		func() error { return ad.CreateUser(ctx, "carol", demoPassword) },
		func() error { return ad.CreateGroup(ctx, "team-leads") },
		func() error { return ad.AddMembers(ctx, "team-leads", "carol") },
		func() error { return ad.CreateGroup(ctx, "team-a") },
		func() error { return ad.CreateGroup(ctx, "developers") },
		func() error { return ad.CreateGroup(ctx, "engineering") },
		func() error { return ad.AddMembers(ctx, "team-a", "alice") },
		func() error { return ad.AddMembers(ctx, "developers", "team-a") },
		func() error { return ad.AddMembers(ctx, "engineering", "developers") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func demoRBAC(ctx context.Context, c *testenv.Cluster) error {
	return c.EnsureNamespace(ctx, demoNS)
}

// demoPolicy is the access policy make run starts with: the gateway's RBAC sync binds
// corp:engineering to a curated role in the demo namespace, and engineers may ask team leads
// for an hour of reading secrets there.
const demoPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: demo-editor
  rules:
  - {apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]}
  - {apiGroups: [""], resources: ["pods", "pods/log"], verbs: ["get", "list", "watch"]}
- name: secret-reader
  rules:
  - {apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"]}
bindings:
- name: engineering
  groups: ["corp:engineering"]
  role: demo-editor
  namespaces: ["demo"]
elevations:
- name: read-secrets
  role: secret-reader
  namespaces: ["demo"]
  requesters: ["corp:engineering"]
  approvers: ["corp:team-leads"]
  maxDuration: 1h
`

// mint asks the gateway binary for a token, as an operator would.
func mint(cfgPath, user string, groups []string) (string, error) {
	args := []string{"token", "--config", cfgPath, "--user", user}
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(filepath.Join("bin", "gateway"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("gateway token: %v: %s", err, errOut.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func writeKubeconfig(path, user, token string, ca []byte) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kaccess-local"] = &clientcmdapi.Cluster{Server: "https://" + gatewayAddr, CertificateAuthorityData: ca}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["kaccess-local"] = &clientcmdapi.Context{Cluster: "kaccess-local", AuthInfo: user, Namespace: demoNS}
	kc.CurrentContext = "kaccess-local"
	return clientcmd.WriteToFile(*kc, path)
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("the gateway did not become ready within 30s")
}

func checkFree(addrs ...string) error {
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("%s is already in use: is `make run` already running? Stop it with Ctrl-C first", a)
		}
		ln.Close()
	}
	return nil
}
