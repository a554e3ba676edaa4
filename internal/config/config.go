// Package config holds the gateway's configuration file: its shape, defaults and validation.
//
// Loading is strict decode, then defaults, then validation that reports every problem at once,
// each with its field path, so an operator fixes a broken file in one pass.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/authn/oidc"
	"github.com/kaccess/kaccess/internal/yamldoc"
)

// Config is the whole gateway configuration file.
type Config struct {
	// Listen is where the gateway serves kubectl (TLS) and its operational endpoints.
	Listen Listen `json:"listen"`
	// TLS is the serving certificate for the proxy listener.
	TLS TLS `json:"tls"`
	// StateDir keeps what the gateway generates and must keep across restarts:
	// the self-signed CA and serving certificate, and session signing keys unless set elsewhere.
	StateDir string `json:"stateDir"`
	// Clusters are the Kubernetes API servers behind the gateway. The first one (or the one
	// marked default) is served at "/", every one at "/clusters/<name>/".
	Clusters []Cluster `json:"clusters"`
	// Directories are the LDAP and Active Directory login sources, by name (`kaccess login
	// --source <name>`). See internal/authn/ldap.Config for every field.
	Directories []ldap.Config `json:"directories"`
	// OIDC are the OpenID Connect issuers whose ID tokens are accepted, on the proxy directly
	// and by `kaccess login --source <name>` (exchanged for a session). See
	// internal/authn/oidc.Config for every field.
	OIDC []oidc.Config `json:"oidc"`
	// Session configures the gateway's own session tokens.
	Session Session `json:"session"`
	// Limits bound what a client may send.
	Limits Limits `json:"limits"`
	// Timeouts for client and upstream connections.
	Timeouts Timeouts `json:"timeouts"`
	// TrustedProxies lists CIDRs of load balancers whose X-Forwarded-For is believed.
	// From anyone else the header is removed.
	TrustedProxies []string `json:"trustedProxies"`
	// Log configures structured logging.
	Log Log `json:"log"`
	// Audit configures the record of every request and where it is stored.
	Audit Audit `json:"audit"`
	// Access configures RBAC sync from the access policy and access requests.
	Access Access `json:"access"`
	// Detections schedules the built-in detections and suppresses what is not worth an alert.
	Detections Detections `json:"detections"`
	// Alerting delivers the findings of scheduled detections (Alertmanager, a webhook).
	Alerting Alerting `json:"alerting"`
}

// Listen addresses.
type Listen struct {
	// Address of the TLS proxy listener kubectl talks to, e.g. ":6443".
	Address string `json:"address"`
	// OpsAddress serves /healthz, /readyz and /metrics over plain HTTP, e.g. ":9090".
	// Empty disables it; the same endpoints are always on the proxy listener too.
	OpsAddress string `json:"opsAddress"`
	// Pprof serves Go's profiles (net/http/pprof, /debug/pprof/) on the ops listener, which
	// has no authentication: turn it on only where the ops port is private. Default off.
	Pprof bool `json:"pprof"`
}

// TLS for the proxy listener. With no certificate configured, the gateway makes a CA and a
// serving certificate in StateDir and keeps them; `kaccess kubeconfig` embeds that CA.
type TLS struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// Hosts are the DNS names and IPs put into a generated serving certificate.
	Hosts []string `json:"hosts"`
}

// Cluster is one upstream Kubernetes API server and the gateway's own credentials for it.
// Exactly one credential source is used: Kubeconfig, TokenFile (with Server), or InCluster.
type Cluster struct {
	// Name identifies the cluster in paths, metrics and logs.
	Name string `json:"name"`
	// Default serves this cluster at "/". Defaults to the first cluster.
	Default bool `json:"default"`
	// Server is the API server URL. Required with TokenFile; overrides the kubeconfig's.
	Server string `json:"server"`
	// CAFile verifies the API server's certificate.
	CAFile string `json:"caFile"`
	// Kubeconfig file holding the gateway's credentials, and optionally Context within it.
	Kubeconfig string `json:"kubeconfig"`
	Context    string `json:"context"`
	// TokenFile holds a bearer token; it is re-read as it changes (projected tokens rotate).
	TokenFile string `json:"tokenFile"`
	// InCluster uses the pod's service account, for a gateway running inside the cluster.
	InCluster bool `json:"inCluster"`
	// Labels describe the cluster ("env: prod", "region: eu") for the access policy's
	// clusterSelector, in Kubernetes label syntax.
	Labels map[string]string `json:"labels"`
}

// Session tokens minted by the gateway after a login.
type Session struct {
	// Issuer is the iss claim; tokens of other issuers are not session tokens.
	Issuer string `json:"issuer"`
	// KeysDir holds the Ed25519 signing keys (<kid>.pem). Share it between replicas
	// (a mounted Secret). Defaults to <stateDir>/session-keys.
	KeysDir string `json:"keysDir"`
	// TTL of a session token.
	TTL Duration `json:"ttl"`
	// RotateEvery makes a new signing key on this schedule; old keys keep verifying.
	RotateEvery Duration `json:"rotateEvery"`
	// Revocations names a ConfigMap "namespace/name" in the default cluster where logouts are
	// recorded and every replica watches them. Empty keeps them in memory: one replica only.
	Revocations string `json:"revocations"`
}

// Limits on requests.
type Limits struct {
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int `json:"maxHeaderBytes"`
	// MaxBodyBytes bounds a request body; larger ones get 413.
	MaxBodyBytes int64 `json:"maxBodyBytes"`
}

// Timeouts. Long-running requests (watch, exec, attach, port-forward, log follow, proxy) have
// no request timeout; they end when either side closes or the gateway shuts down.
type Timeouts struct {
	// Request bounds an ordinary (not long-running) request end to end.
	Request Duration `json:"request"`
	// ReadHeader bounds reading a client's request headers.
	ReadHeader Duration `json:"readHeader"`
	// Idle closes idle keep-alive client connections.
	Idle Duration `json:"idle"`
	// UpstreamDial bounds connecting to the API server.
	UpstreamDial Duration `json:"upstreamDial"`
	// ShutdownDrain is how long in-flight requests may finish at shutdown before
	// long-running ones are cut.
	ShutdownDrain Duration `json:"shutdownDrain"`
}

// Log settings.
type Log struct {
	// Level: debug, info, warn or error.
	Level string `json:"level"`
	// Format: json or text.
	Format string `json:"format"`
}

// Load reads, decodes strictly, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// MaxFileSize bounds a config file.
const MaxFileSize = 1 << 20

// Parse decodes YAML strictly (unknown, duplicate or wrongly cased fields are errors, named by
// their path), applies defaults and validates.
func Parse(data []byte) (*Config, error) {
	var c Config
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("decode config: %d bytes exceeds the limit of %d", len(data), MaxFileSize)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := decodeStrict(data, &c); err != nil {
			return nil, fmt.Errorf("decode config: %w", err)
		}
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeStrict decodes one YAML document into v. encoding/json (behind yaml.UnmarshalStrict)
// matches field names case-insensitively, so "StateDir" would pass and "stateDir" and
// "StateDir" together would silently keep one; sigs.k8s.io/json, the API server's decoder, is
// case-sensitive and names unknown fields by their path.
func decodeStrict(data []byte, v any) error {
	if err := yamldoc.Single(data, "configuration"); err != nil {
		return err
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// SetDefaults fills what the file left out.
func (c *Config) SetDefaults() {
	setString(&c.Listen.Address, ":6443")
	setString(&c.StateDir, "/var/lib/kaccess")
	if len(c.TLS.Hosts) == 0 {
		c.TLS.Hosts = []string{"localhost", "127.0.0.1"}
	}
	setString(&c.Session.Issuer, "kaccess")
	setString(&c.Session.KeysDir, c.StateDir+"/session-keys")
	setDuration(&c.Session.TTL, 8*time.Hour)
	if c.Limits.MaxHeaderBytes == 0 {
		c.Limits.MaxHeaderBytes = 1 << 20
	}
	if c.Limits.MaxBodyBytes == 0 {
		// kube-apiserver's own limit for a request body is 3 MiB.
		c.Limits.MaxBodyBytes = 3 << 20
	}
	setDuration(&c.Timeouts.Request, 60*time.Second)
	setDuration(&c.Timeouts.ReadHeader, 10*time.Second)
	setDuration(&c.Timeouts.Idle, 120*time.Second)
	setDuration(&c.Timeouts.UpstreamDial, 10*time.Second)
	setDuration(&c.Timeouts.ShutdownDrain, 30*time.Second)
	for i := range c.Directories {
		c.Directories[i].SetDefaults()
	}
	for i := range c.OIDC {
		c.OIDC[i].SetDefaults()
	}
	c.Audit.setDefaults(c.StateDir)
	c.Access.setDefaults()
	setString(&c.Log.Level, "info")
	setString(&c.Log.Format, "json")
	if len(c.Clusters) > 0 {
		hasDefault := false
		for _, cl := range c.Clusters {
			hasDefault = hasDefault || cl.Default
		}
		if !hasDefault {
			c.Clusters[0].Default = true
		}
	}
	c.Detections.setDefaults()
	c.Alerting.setDefaults(c)
}

// DefaultCluster is the cluster served at "/".
func (c *Config) DefaultCluster() *Cluster {
	for i := range c.Clusters {
		if c.Clusters[i].Default {
			return &c.Clusters[i]
		}
	}
	return nil
}

func setString(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func setDuration(p *Duration, v time.Duration) {
	if *p == 0 {
		*p = Duration(v)
	}
}
