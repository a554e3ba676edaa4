package cli

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigOptions say what `kaccess kubeconfig` writes.
type KubeconfigOptions struct {
	// Path of the kubeconfig to write or merge into (default: $KUBECONFIG's first file or ~/.kube/config).
	Path string
	// Server is the gateway's URL; CAData its CA, embedded so kubectl verifies it.
	Server string
	CAData []byte
	// Context names the new context (default: kaccess-<host>).
	Context   string
	Namespace string
	// Executable is the kaccess binary kubectl runs as its credential plugin.
	Executable string
	// Switch makes the new context the current one.
	Switch bool
}

// WriteKubeconfig merges a cluster, a user whose credential is `kaccess credential` as a
// client.authentication.k8s.io/v1 exec plugin, and a context into the kubeconfig, keeping
// everything else in it. It returns the path written and the context name.
func WriteKubeconfig(o KubeconfigOptions) (string, string, error) {
	u, err := url.Parse(o.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", "", fmt.Errorf("server %q: want the gateway's https:// URL", o.Server)
	}
	path := o.Path
	if path == "" {
		path = clientcmd.NewDefaultClientConfigLoadingRules().GetDefaultFilename()
	}
	name := o.Context
	if name == "" {
		name = "kaccess-" + unsafeChars.ReplaceAllString(u.Host, "-")
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if os.IsNotExist(err) {
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: o.Server, CertificateAuthorityData: o.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		APIVersion:      "client.authentication.k8s.io/v1",
		Command:         o.Executable,
		Args:            []string{"credential", "--server", o.Server},
		InteractiveMode: clientcmdapi.IfAvailableExecInteractiveMode,
		InstallHint:     "kaccess is the kaccess CLI: install it and run `kaccess login --server " + o.Server + "`",
	}}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: o.Namespace}
	if o.Switch || cfg.CurrentContext == "" {
		cfg.CurrentContext = name
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", "", err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", "", fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return path, name, os.Chmod(path, 0o600)
}
