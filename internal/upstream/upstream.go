// Package upstream turns a configured cluster into the gateway's own connection to its API
// server: credentials (kubeconfig, token file, in-cluster service account), the transports the
// proxy uses, a client for the few API calls the gateway makes, and a readiness probe.
package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport"

	"github.com/kaccess/kaccess/internal/config"
)

// Cluster is the gateway's connection to one API server.
type Cluster struct {
	Name string
	URL  *url.URL
	// Transport is for ordinary requests (HTTP/2 when the server offers it), with the gateway's
	// credentials.
	Transport http.RoundTripper
	// ProxyTransport is what the proxy forwards ordinary requests with. With SetCredentials it
	// carries no credentials itself: client-go's wrappers copy every request and its headers to
	// add the Authorization header, and the proxy's outgoing request is its own already, so the
	// proxy calls SetCredentials on it instead. Without (an exec plugin, an auth provider, basic
	// auth), it is Transport.
	ProxyTransport http.RoundTripper
	// SetCredentials sets the gateway's own credential and, when the request has none, its
	// user agent, on a request the caller owns; nil when ProxyTransport adds them itself.
	SetCredentials func(h http.Header)
	// UpgradeTransport speaks only HTTP/1.1, for exec, attach and port-forward upgrades.
	UpgradeTransport http.RoundTripper
	// Client calls the API as the gateway itself (SubjectAccessReviews, RBAC sync).
	Client kubernetes.Interface
	// Dynamic calls the API as the gateway itself for custom resources (AccessRequests).
	Dynamic dynamic.Interface

	ready    atomic.Bool
	lastErr  atomic.Pointer[string]
	readyURL string
}

// Connect builds the connection for cl. It does not contact the server; Probe does.
func Connect(cl config.Cluster, dialTimeout time.Duration, userAgent string) (*Cluster, error) {
	rc, err := restConfig(cl)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
	}
	rc.UserAgent = userAgent
	rc.Timeout = 0 // per request, from the gateway's own timeouts; watches have none
	rc.QPS, rc.Burst = -1, -1
	rc.Dial = (&netDialer{timeout: dialTimeout}).DialContext
	u, err := url.Parse(rc.Host)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("cluster %q: API server address %q must be an https:// URL", cl.Name, rc.Host)
	}
	if rc.Insecure {
		return nil, fmt.Errorf("cluster %q: the kubeconfig turns off TLS verification (insecure-skip-tls-verify); give the API server's CA instead", cl.Name)
	}
	h2, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: transport: %w", cl.Name, err)
	}
	h1cfg := rest.CopyConfig(rc)
	h1cfg.NextProtos = []string{"http/1.1"}
	h1, err := rest.TransportFor(h1cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: upgrade transport: %w", cl.Name, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: client: %w", cl.Name, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: dynamic client: %w", cl.Name, err)
	}
	c := &Cluster{Name: cl.Name, URL: u, Transport: h2, ProxyTransport: h2, UpgradeTransport: h1, Client: client, Dynamic: dyn,
		readyURL: u.JoinPath("readyz").String()}
	if err := c.setupProxyTransport(rc); err != nil {
		return nil, fmt.Errorf("cluster %q: proxy transport: %w", cl.Name, err)
	}
	c.setErr("not probed yet")
	return c, nil
}

// setupProxyTransport gives the proxy a transport without client-go's credential wrappers when
// the credential is a bearer token, a token file (re-read as client-go does) or a client
// certificate (in the TLS config, so in the transport).
func (c *Cluster) setupProxyTransport(rc *rest.Config) error {
	if rc.ExecProvider != nil || rc.AuthProvider != nil || rc.Username != "" || rc.Password != "" || rc.WrapTransport != nil {
		return nil
	}
	bare := rest.CopyConfig(rc)
	bare.BearerToken, bare.BearerTokenFile, bare.UserAgent = "", "", ""
	rt, err := rest.TransportFor(bare)
	if err != nil {
		return err
	}
	token := rc.BearerToken
	var source oauth2.TokenSource
	if rc.BearerTokenFile != "" {
		source = transport.NewCachedFileTokenSource(rc.BearerTokenFile)
		if token == "" {
			t, err := source.Token()
			if err != nil {
				return err
			}
			token = t.AccessToken
		}
	}
	userAgent := rc.UserAgent
	c.ProxyTransport = rt
	c.SetCredentials = func(h http.Header) {
		bearer := token
		if source != nil {
			// As client-go: the last good token when the file cannot be read.
			if t, err := source.Token(); err == nil {
				bearer = t.AccessToken
			}
		}
		if bearer != "" {
			h["Authorization"] = []string{"Bearer " + bearer}
		}
		if userAgent != "" && h.Get("User-Agent") == "" {
			h["User-Agent"] = []string{userAgent}
		}
	}
	return nil
}

func restConfig(cl config.Cluster) (*rest.Config, error) {
	var rc *rest.Config
	switch {
	case cl.InCluster:
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster credentials: %w", err)
		}
		rc = c
	case cl.Kubeconfig != "":
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cl.Kubeconfig}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: cl.Context}
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", cl.Kubeconfig, err)
		}
		rc = c
	case cl.TokenFile != "":
		// client-go re-reads the file as it changes, so a rotated (projected) token is picked up.
		rc = &rest.Config{BearerTokenFile: cl.TokenFile}
	default:
		return nil, fmt.Errorf("no credentials configured")
	}
	if cl.Server != "" {
		rc.Host = cl.Server
	}
	if cl.CAFile != "" {
		rc.CAFile, rc.CAData = cl.CAFile, nil
	}
	if rc.Impersonate.UserName != "" || len(rc.Impersonate.Groups) > 0 {
		return nil, fmt.Errorf("the gateway's credentials must not impersonate; remove 'as' from the kubeconfig")
	}
	return rc, nil
}

// Probe asks the API server's /readyz once and records the answer for Ready.
func (c *Cluster) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.readyURL, nil)
	if err != nil {
		return err
	}
	resp, err := c.Transport.RoundTrip(req)
	if err != nil {
		c.setErr(fmt.Sprintf("unreachable: %v", err))
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("readyz answered %d", resp.StatusCode)
		c.setErr(err.Error())
		return err
	}
	c.ready.Store(true)
	return nil
}

func (c *Cluster) setErr(msg string) {
	c.ready.Store(false)
	c.lastErr.Store(&msg)
}

// Ready reports the last probe's outcome, and why not when not.
func (c *Cluster) Ready() (bool, string) {
	if c.ready.Load() {
		return true, ""
	}
	return false, *c.lastErr.Load()
}

// ProbeEvery probes until ctx ends.
func (c *Cluster) ProbeEvery(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_ = c.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
