// Command devenv is `make run`: a local kube-apiserver with the gateway in front of it, a Samba
// Active Directory with demo users in nested groups, their RBAC, and what to type, until Ctrl-C.
package main

import (
	"bytes"
	"context"
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

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kaccess/kaccess/internal/testenv"
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

	fmt.Println(">> starting etcd and kube-apiserver (a few seconds)")
	cluster, err := testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(root, "cluster")})
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
log:
  level: info
`, gatewayAddr, opsAddr, filepath.Join(root, "gateway"), cluster.URL, cluster.CAFile, cluster.GatewayTokenFile,
		ad.URL, ad.CAFile, ad.ServiceDN, bindPasswordFile, ad.BaseDN)
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
  alice / %s   in team-a, which is in developers, which is in engineering;
                         the Role in namespace %q is bound to the outermost group, corp:engineering
  bob                    no groups, no RBAC (a token for him is in %s)

Try:
  bin/kaccess login --server %s --ca-file %s --username alice
  bin/kaccess kubeconfig --server %s --kubeconfig %s --namespace demo
  KUBECONFIG=%s kubectl create configmap hello --from-literal=greeting=hi
  KUBECONFIG=%s kubectl auth whoami              # alice with all three nested groups
  kubectl --kubeconfig %s -n demo get configmaps   # refused: bob has no role

Stop with Ctrl-C.
`, server, opsAddr, rel("gateway.log"), cluster.URL, rel("admin.kubeconfig"), ad.URL,
		demoPassword, demoNS, rel("bob.kubeconfig"),
		server, rel("ca.crt"), server, rel("kubeconfig"), rel("kubeconfig"), rel("kubeconfig"), rel("bob.kubeconfig"))

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

// demoPassword is alice's password in the demo directory (a throwaway domain on loopback).
const demoPassword = "Demo-Passw0rd"

// demoDirectory makes alice a member of corp:engineering through two levels of nesting.
func demoDirectory(ctx context.Context, ad *testenv.AD) error {
	steps := []func() error{
		func() error { return ad.CreateUser(ctx, "alice", demoPassword) },
		func() error { return ad.CreateUser(ctx, "bob", demoPassword) },
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
	if err := c.EnsureNamespace(ctx, demoNS); err != nil {
		return err
	}
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log"}, Verbs: []string{"get", "list", "watch"}},
	}
	return c.GrantRole(ctx, demoNS, "demo-engineering", rules, testenv.Group("corp:engineering"))
}

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
