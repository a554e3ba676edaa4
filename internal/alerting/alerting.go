// Package alerting posts alerts to Prometheus Alertmanager (API v2, POST /api/v2/alerts) and
// to a generic JSON webhook. It knows nothing of where alerts come from: the wiring turns
// findings into Alerts. Delivery is one POST per batch; an error means the batch must be sent
// again (Alertmanager deduplicates alerts by their labels, so a repeat costs nothing there).
package alerting

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Alert is one alert as Alertmanager's API v2 takes it (PostableAlert).
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Endpoint is where a sender posts.
type Endpoint struct {
	// URL: Alertmanager's base URL (its API is under /api/v2), or the webhook's own URL.
	URL string
	// CAFile verifies an https server; system roots when empty.
	CAFile string
	// BearerTokenFile holds a token sent as Authorization: Bearer; read on every POST, so a
	// rotated token is used at once.
	BearerTokenFile string
	// Timeout of one POST; default 10s.
	Timeout time.Duration
}

type poster struct {
	url    string
	ep     Endpoint
	client *http.Client
}

func newPoster(ep Endpoint, url string) (*poster, error) {
	if ep.Timeout <= 0 {
		ep.Timeout = 10 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if ep.CAFile != "" {
		pem, err := os.ReadFile(ep.CAFile)
		if err != nil {
			return nil, fmt.Errorf("alerting: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("alerting: CA file %s holds no PEM certificate", ep.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &poster{url: url, ep: ep, client: &http.Client{Transport: tr, Timeout: ep.Timeout}}, nil
}

// post sends body as JSON and wants a 2xx answer.
func (p *poster) post(ctx context.Context, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("alerting: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("alerting: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kaccess-gateway")
	if p.ep.BearerTokenFile != "" {
		tok, err := os.ReadFile(p.ep.BearerTokenFile)
		if err != nil {
			return fmt.Errorf("alerting: bearer token file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("alerting: post to %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alerting: %s answered %s: %s", p.url, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Alertmanager posts to one Alertmanager.
type Alertmanager struct{ p *poster }

// NewAlertmanager returns a sender to the Alertmanager at ep.URL.
func NewAlertmanager(ep Endpoint) (*Alertmanager, error) {
	p, err := newPoster(ep, strings.TrimRight(ep.URL, "/")+"/api/v2/alerts")
	if err != nil {
		return nil, err
	}
	return &Alertmanager{p: p}, nil
}

// Send posts alerts; a firing alert's EndsAt lies ahead (it ends by itself if not re-sent),
// a resolved one's is its end.
func (a *Alertmanager) Send(ctx context.Context, alerts []Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	return a.p.post(ctx, alerts)
}

// WebhookAlert is one alert in a webhook message: an Alert with its status and id.
type WebhookAlert struct {
	Status string `json:"status"` // firing or resolved
	ID     string `json:"id"`     // stable across the alert's messages
	Alert
}

// WebhookMessage is the body of a webhook POST, shaped like Alertmanager's own webhook
// notifications so receivers written for those read it.
type WebhookMessage struct {
	Version  string         `json:"version"`
	Sender   string         `json:"sender"`
	Status   string         `json:"status"` // firing when any alert is firing
	Alerts   []WebhookAlert `json:"alerts"`
	SentTime time.Time      `json:"sentTime"`
}

// Webhook posts to a generic JSON webhook.
type Webhook struct{ p *poster }

// NewWebhook returns a sender to the webhook at ep.URL.
func NewWebhook(ep Endpoint) (*Webhook, error) {
	p, err := newPoster(ep, ep.URL)
	if err != nil {
		return nil, err
	}
	return &Webhook{p: p}, nil
}

// Send posts one message with alerts.
func (w *Webhook) Send(ctx context.Context, alerts []WebhookAlert, now time.Time) error {
	if len(alerts) == 0 {
		return nil
	}
	msg := WebhookMessage{Version: "1", Sender: "kaccess", Status: "resolved", Alerts: alerts, SentTime: now.UTC()}
	for _, a := range alerts {
		if a.Status == "firing" {
			msg.Status = "firing"
		}
	}
	return w.p.post(ctx, msg)
}
