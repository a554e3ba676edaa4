// Package testenv starts a real etcd and kube-apiserver as local processes, for the
// integration tests of every package (through TestMain) and for `make run`.
//
// There is no Docker and no controller-manager: the cluster is an API server with storage,
// static-token authentication and RBAC authorization. That is what the gateway talks to.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

const (
	// ModulePath identifies the repository root when walking up from the working directory.
	ModulePath = "github.com/kaccess/kaccess"
	// BinDirEnv overrides where the etcd and kube-apiserver binaries are looked up.
	BinDirEnv = "KACCESS_BIN_DIR"

	// AdminUser is in system:masters; GatewayUser is the gateway's own, unprivileged identity.
	AdminUser   = "kaccess-admin"
	GatewayUser = "kaccess-gateway"

	// rbacManifest is the shipped least-privilege RBAC, relative to the repository root.
	rbacManifest = "deploy/kubernetes/rbac.yaml"

	readyTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
)

// ClusterConfig says where the cluster keeps its state and finds its binaries.
type ClusterConfig struct {
	// Dir holds etcd data, certificates, tokens and logs; a temp dir, removed by Stop, if
	// empty. Each start makes a fresh cluster: etcd data and credentials in Dir are replaced.
	Dir string
	// BinDir holds etcd and kube-apiserver; default $KACCESS_BIN_DIR, else <repo root>/bin.
	BinDir string
	// RBACFile is the gateway's RBAC manifest; default <repo root>/deploy/kubernetes/rbac.yaml.
	RBACFile string
	// Stdout and Stderr receive both processes' logs; default etcd.log and
	// kube-apiserver.log in Dir.
	Stdout, Stderr io.Writer
	// SecurePort is the API server's HTTPS port; 0 picks a free one.
	SecurePort int
	// APIServerArgs are added to kube-apiserver's flags, e.g. its audit backends
	// (--audit-policy-file, --audit-log-path, --audit-webhook-config-file).
	APIServerArgs []string
	// StaticTokens are extra users of the API server's static token file (benchmarks compare
	// a plain user's request with the gateway's impersonated one).
	StaticTokens []StaticToken
}

// StaticToken is one line of the API server's static token file.
type StaticToken struct {
	Token, User string
	Groups      []string
}

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	URL              string // https://127.0.0.1:port
	CAData           []byte // PEM of the CA that signed the serving certificate
	CAFile           string
	AdminToken       string // user kaccess-admin, group system:masters
	GatewayToken     string // user kaccess-gateway, bound to the shipped ClusterRole only
	GatewayTokenFile string
	Dir              string
	StartupTime      time.Duration // from StartCluster's call to RBAC applied

	stopMu          sync.Mutex // Stop may race with RunWithCluster's signal handler
	etcd, apiserver *process
	apiserverRun    *processSpec // how to start kube-apiserver again (RestartAPIServer)
	removeDir       bool
	admin           kubernetes.Interface
}

// StartCluster starts etcd then kube-apiserver, waits until /readyz answers 200, and applies
// the gateway's RBAC manifest. ctx bounds the start only; call Stop to end the processes.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	started := time.Now()
	root, rootErr := repoRoot()
	binDir := cfg.BinDir
	if binDir == "" {
		binDir = os.Getenv(BinDirEnv)
	}
	if binDir == "" {
		if rootErr != nil {
			return nil, fmt.Errorf("find bin dir: %w (set %s or ClusterConfig.BinDir)", rootErr, BinDirEnv)
		}
		binDir = filepath.Join(root, "bin")
	}
	rbacFile := cfg.RBACFile
	if rbacFile == "" {
		if rootErr != nil {
			return nil, fmt.Errorf("find %s: %w (set ClusterConfig.RBACFile)", rbacManifest, rootErr)
		}
		rbacFile = filepath.Join(root, rbacManifest)
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			return nil, fmt.Errorf("missing %s binary: %w (run `make tools` to build bin/kube-apiserver and bin/etcd, or set %s)", name, err, BinDirEnv)
		}
	}

	c := &Cluster{Dir: cfg.Dir}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-")
		if err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		c.Dir, c.removeDir = dir, true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := c.start(ctx, cfg, binDir, rbacFile); err != nil {
		_ = c.Stop()
		return nil, err
	}
	c.StartupTime = time.Since(started)
	return c, nil
}

// start writes credentials, starts the processes and applies the RBAC manifest.
func (c *Cluster) start(ctx context.Context, cfg ClusterConfig, binDir, rbacFile string) error {
	if err := c.writeCredentials(cfg.StaticTokens); err != nil {
		return err
	}
	err := startPickingPorts(cfg.SecurePort != 0,
		func() error { return c.startProcesses(ctx, cfg, binDir) }, c.stopProcesses)
	if err != nil {
		return err
	}
	if c.admin, err = kubernetes.NewForConfig(c.AdminConfig()); err != nil {
		return fmt.Errorf("build admin client: %w", err)
	}
	if err := c.applyRBACFile(ctx, rbacFile); err != nil {
		return fmt.Errorf("apply %s: %w", rbacFile, err)
	}
	// The CRDs kaccess ships (AccessRequest) sit beside the RBAC manifest.
	crdDir := filepath.Join(filepath.Dir(rbacFile), "crds")
	if err := c.applyCRDs(ctx, crdDir); err != nil {
		return fmt.Errorf("apply CRDs in %s: %w", crdDir, err)
	}
	return nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyCRDs creates every CustomResourceDefinition in dir (*.yaml) and waits until each is
// Established, so tests can use the resources at once. A missing dir is fine (a custom
// ClusterConfig.RBACFile elsewhere).
func (c *Cluster) applyCRDs(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return err
	}
	client, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	api := client.Resource(crdGVR)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var crd unstructured.Unstructured
		if err := yaml.Unmarshal(data, &crd.Object); err != nil {
			return fmt.Errorf("decode %s: %w", f, err)
		}
		if _, err := api.Create(ctx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", crd.GetName(), err)
		}
		if err := waitEstablished(ctx, api, crd.GetName()); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, api dynamic.ResourceInterface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		got, err := api.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established after %s (last error: %v)", name, readyTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var errPortInUse = errors.New("port already in use")

// startProcesses starts etcd and kube-apiserver on fresh ports and waits for both.
func (c *Cluster) startProcesses(ctx context.Context, cfg ClusterConfig, binDir string) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	securePort := cfg.SecurePort
	if securePort == 0 {
		securePort = ports[2]
	}
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", securePort)

	dataDir := filepath.Join(c.Dir, "etcd")
	_ = os.RemoveAll(dataDir) // a previous attempt's member is bound to its old peer URL
	c.etcd, err = startProcess("etcd", filepath.Join(binDir, "etcd"), []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--unsafe-no-fsync", // throwaway data: durability only costs time
		"--log-level=warn",
	}, cfg.Stdout, cfg.Stderr, filepath.Join(c.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	if err := waitReady(ctx, c.etcd, clientURL+"/health", "", nil); err != nil {
		return err
	}

	c.apiserverRun = &processSpec{name: "kube-apiserver", bin: filepath.Join(binDir, "kube-apiserver"), args: append([]string{
		"--etcd-servers=" + clientURL,
		"--bind-address=127.0.0.1",
		// Without it the API server looks for a host interface with a default route, which
		// offline machines lack. A loopback address is refused by the endpoint reconciler
		// (the `kubernetes` Service's endpoints), which nothing here needs: turn it off.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", securePort),
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver-certs"),
		// Our own CA-signed serving certificate, so clients verify TLS from the first request.
		"--tls-cert-file=" + filepath.Join(c.Dir, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(c.Dir, "serving.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(c.Dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(c.Dir, "sa.key"),
		"--token-auth-file=" + filepath.Join(c.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
	}, cfg.APIServerArgs...), stdout: cfg.Stdout, stderr: cfg.Stderr, logPath: filepath.Join(c.Dir, "kube-apiserver.log")}
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	// The API server authenticates itself (our CA, our token), etcd does not: if our etcd lost
	// a port race, /health was answered by another test binary's etcd. A lost race ends etcd
	// within milliseconds, long before the API server is ready, so checking now catches it.
	if c.etcd.exited() {
		return c.etcd.failure("exited while kube-apiserver started (%v)", c.etcd.err)
	}
	return nil
}

// Stop ends kube-apiserver then etcd (SIGTERM, SIGKILL after 10 s) and removes the state
// dir if StartCluster created it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	if c == nil {
		return nil
	}
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	err := c.stopProcesses()
	if c.removeDir {
		if rmErr := os.RemoveAll(c.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove state dir: %w", rmErr))
		}
		c.removeDir = false
	}
	return err
}

func (c *Cluster) stopProcesses() error {
	var errs []error
	for _, p := range []*process{c.apiserver, c.etcd} { // API server first: it needs etcd
		if p != nil {
			errs = append(errs, p.stop(stopTimeout))
		}
	}
	c.apiserver, c.etcd = nil, nil
	return errors.Join(errs...)
}

// PIDs are the process ids of kube-apiserver and etcd (0 when not running), for benchmarks
// that read their CPU time.
func (c *Cluster) PIDs() (apiserver, etcd int) {
	if c.apiserver != nil {
		apiserver = c.apiserver.cmd.Process.Pid
	}
	if c.etcd != nil {
		etcd = c.etcd.cmd.Process.Pid
	}
	return apiserver, etcd
}

// ConfigForToken returns a client config for the API server authenticating with token.
func (c *Cluster) ConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: bytes.Clone(c.CAData)},
		// Tests create objects in bursts; client-side throttling would only slow them down.
		QPS:   200,
		Burst: 400,
	}
}

// AdminConfig returns a client config for kaccess-admin (system:masters).
func (c *Cluster) AdminConfig() *rest.Config { return c.ConfigForToken(c.AdminToken) }

// GatewayConfig returns a client config for the gateway's own identity, without impersonation.
func (c *Cluster) GatewayConfig() *rest.Config { return c.ConfigForToken(c.GatewayToken) }

// AdminClient returns a clientset for kaccess-admin.
func (c *Cluster) AdminClient() kubernetes.Interface { return c.admin }

// KubeconfigFor returns a kubeconfig reaching the API server as user with token.
func (c *Cluster) KubeconfigFor(user, token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kaccess-testenv"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CAData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kaccess-testenv"] = &clientcmdapi.Context{Cluster: "kaccess-testenv", AuthInfo: user}
	cfg.CurrentContext = "kaccess-testenv"
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("write kubeconfig for %s: %w", user, err)
	}
	return out, nil
}

// WriteKubeconfig writes KubeconfigFor(user, token) to path, readable by the owner only.
func (c *Cluster) WriteKubeconfig(path, user, token string) error {
	out, err := c.KubeconfigFor(user, token)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// writeCredentials writes the static tokens, the service-account key and the serving
// certificate into the state dir.
func (c *Cluster) writeCredentials(extra []StaticToken) error {
	c.AdminToken, c.GatewayToken = randomToken(), randomToken()
	c.GatewayTokenFile = filepath.Join(c.Dir, "gateway.token")
	// Format: token,user,uid,"group1,group2".
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s\n",
		c.AdminToken, AdminUser, AdminUser, c.GatewayToken, GatewayUser, GatewayUser)
	for _, t := range extra {
		line := fmt.Sprintf("%s,%s,%s", t.Token, t.User, t.User)
		if len(t.Groups) > 0 {
			line += fmt.Sprintf(",%q", strings.Join(t.Groups, ","))
		}
		tokens += line + "\n"
	}
	files := map[string][]byte{
		"tokens.csv":    []byte(tokens),
		"gateway.token": []byte(c.GatewayToken),
	}
	saKey, err := rsaKeyPEM()
	if err != nil {
		return err
	}
	files["sa.key"] = saKey
	caPEM, certPEM, keyPEM, err := servingCert()
	if err != nil {
		return err
	}
	files["ca.crt"], files["serving.crt"], files["serving.key"] = caPEM, certPEM, keyPEM
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	c.CAData, c.CAFile = caPEM, filepath.Join(c.Dir, "ca.crt")
	return nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux (Go 1.24+ crashes instead of returning an error)
	return hex.EncodeToString(b)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick free port: %w", err)
		}
		defer l.Close() // held until all are picked so they are distinct
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// repoRoot walks up from the working directory to the go.mod of this module, so tests in any
// package (and `make run` from any subdirectory) find bin/ and deploy/.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working dir: %w", err)
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

func isModuleRoot(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == ModulePath
		}
	}
	return false
}
