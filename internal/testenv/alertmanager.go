package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// AlertmanagerConfig says how to run a private Alertmanager.
type AlertmanagerConfig struct {
	// Config is the alertmanager.yml to run (required).
	Config []byte
	// Dir holds alertmanager.yml, the storage dir (notification log, silences) and
	// alertmanager.log; a temp dir, removed by Close, if empty.
	Dir string
	// BinDir holds alertmanager; default $KACCESS_BIN_DIR, else <repo root>/bin.
	BinDir string
	// Port is the HTTP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Stdout and Stderr receive its log; default alertmanager.log in Dir.
	Stdout, Stderr io.Writer
}

// Alertmanager is a real Alertmanager (bin/alertmanager, built from its Go module by `make
// tools`) on http://127.0.0.1:<port>, without clustering. Stop and Start take it away and bring
// it back on the same port with the same storage, as an outage would: the notification log and
// silences survive (Alertmanager snapshots them on SIGTERM), the alerts themselves do not (they
// live in memory; senders must resend them).
type Alertmanager struct {
	URL         string // http://127.0.0.1:port, no trailing slash
	Dir         string
	ConfigFile  string
	StorageDir  string
	StartupTime time.Duration

	cfg       AlertmanagerConfig
	bin       string
	port      int
	client    *http.Client
	mu        sync.Mutex
	proc      *process
	removeDir bool
}

// ToolBinary returns the path of a binary `make tools` builds (alertmanager, amtool, promtool,
// kube-apiserver, ...) in $KACCESS_BIN_DIR, else <repo root>/bin. A missing one fails the
// test with what to run: these are real peers, never skipped.
func ToolBinary(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := toolBinary("", name)
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

func toolBinary(binDir, name string) (string, error) {
	if binDir == "" {
		binDir = os.Getenv(BinDirEnv)
	}
	if binDir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", fmt.Errorf("find bin dir: %w (set %s)", err, BinDirEnv)
		}
		binDir = filepath.Join(root, "bin")
	}
	bin := filepath.Join(binDir, name)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("missing %s binary: %w (run `make tools` to build it, or set %s)", name, err, BinDirEnv)
	}
	return bin, nil
}

// StartAlertmanager writes cfg.Config and starts Alertmanager with its storage in Dir, and
// waits until /-/ready answers. ctx bounds the start only. Stop ends the process, Close also
// removes a temp Dir.
func StartAlertmanager(ctx context.Context, cfg AlertmanagerConfig) (*Alertmanager, error) {
	started := time.Now()
	if len(cfg.Config) == 0 {
		return nil, errors.New("testenv: AlertmanagerConfig.Config is empty")
	}
	bin, err := toolBinary(cfg.BinDir, "alertmanager")
	if err != nil {
		return nil, err
	}
	a := &Alertmanager{cfg: cfg, bin: bin, Dir: cfg.Dir, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	if a.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-alertmanager-")
		if err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		a.Dir, a.removeDir = dir, true
	}
	a.ConfigFile = filepath.Join(a.Dir, "alertmanager.yml")
	a.StorageDir = filepath.Join(a.Dir, "data")
	if err := os.MkdirAll(a.StorageDir, 0o700); err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("create storage dir: %w", err)
	}
	if err := os.WriteFile(a.ConfigFile, cfg.Config, 0o600); err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("write config: %w", err)
	}
	err = startPickingPorts(cfg.Port != 0, func() error {
		a.port = cfg.Port
		if a.port == 0 {
			ports, err := freePorts(1)
			if err != nil {
				return err
			}
			a.port = ports[0]
		}
		a.URL = "http://127.0.0.1:" + strconv.Itoa(a.port)
		return a.Start(ctx)
	}, a.Stop)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.StartupTime = time.Since(started)
	return a, nil
}

// MustStartAlertmanager starts an Alertmanager running config with its state in a temp dir of
// the test, and closes it when the test ends.
func MustStartAlertmanager(tb testing.TB, config []byte) *Alertmanager {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	a, err := StartAlertmanager(ctx, AlertmanagerConfig{Config: config, Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := a.Close(); err != nil {
			tb.Errorf("stop alertmanager: %v", err)
		}
	})
	return a
}

// Start starts Alertmanager again (after Stop) on the same port with the same config file and
// storage, and waits until it is ready. It does nothing when it runs.
func (a *Alertmanager) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil && !a.proc.exited() {
		return nil
	}
	p, err := startProcess("alertmanager", a.bin, []string{
		"--config.file=" + a.ConfigFile,
		"--storage.path=" + a.StorageDir,
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(a.port),
		"--web.external-url=" + a.URL,
		// No gossip: one instance, and no 9094 taken on the machine.
		"--cluster.listen-address=",
		"--log.level=debug",
	}, a.cfg.Stdout, a.cfg.Stderr, filepath.Join(a.Dir, "alertmanager.log"))
	if err != nil {
		return err
	}
	a.proc = p
	return waitReady(ctx, p, a.URL+"/-/ready", "", nil)
}

// Stop stops Alertmanager (SIGTERM, which snapshots the notification log and silences) and
// keeps its port and storage for Start.
func (a *Alertmanager) Stop() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return nil
	}
	err := a.proc.stop(stopTimeout)
	a.proc = nil
	return err
}

// Close stops Alertmanager and removes a temp state dir.
func (a *Alertmanager) Close() error {
	if a == nil {
		return nil
	}
	err := a.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.removeDir {
		if rmErr := os.RemoveAll(a.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove state dir: %w", rmErr))
		}
		a.removeDir = false
	}
	return err
}

// Output returns the end of Alertmanager's log, for a failing test to show.
func (a *Alertmanager) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return ""
	}
	return a.proc.tail.String()
}

// Reload writes a new config and makes the running Alertmanager load it (POST /-/reload).
func (a *Alertmanager) Reload(ctx context.Context, config []byte) error {
	if err := os.WriteFile(a.ConfigFile, config, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return a.do(ctx, http.MethodPost, "/-/reload", nil, nil)
}

// PostableAlert is one alert of POST /api/v2/alerts. An EndsAt in the past resolves it.
type PostableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// GettableAlert is one alert of GET /api/v2/alerts, with whether it is inhibited or silenced.
type GettableAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Fingerprint string            `json:"fingerprint"`
	Status      struct {
		State       string   `json:"state"` // active, suppressed, unprocessed
		InhibitedBy []string `json:"inhibitedBy"`
		SilencedBy  []string `json:"silencedBy"`
	} `json:"status"`
	Receivers []struct {
		Name string `json:"name"`
	} `json:"receivers"`
}

// PostAlerts sends alerts through the API v2, as Prometheus or the gateway would.
func (a *Alertmanager) PostAlerts(ctx context.Context, alerts ...PostableAlert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return err
	}
	return a.do(ctx, http.MethodPost, "/api/v2/alerts", body, nil)
}

// Alerts returns the alerts Alertmanager holds (GET /api/v2/alerts), including inhibited and
// silenced ones.
func (a *Alertmanager) Alerts(ctx context.Context) ([]GettableAlert, error) {
	var out []GettableAlert
	if err := a.do(ctx, http.MethodGet, "/api/v2/alerts", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (a *Alertmanager) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, lastLines(string(b), 5))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}
