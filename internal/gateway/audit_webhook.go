package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/webhook"
	"github.com/kaccess/kaccess/internal/upstream"
)

// webhookPath is where a cluster's API server posts its own audit events: one path per
// cluster, so each record says which cluster it came from.
const webhookPath = "/audit-webhook/"

// mountAuditWebhooks serves the API servers' audit webhooks when audit.webhook is set.
func (g *Gateway) mountAuditWebhooks(mux *http.ServeMux) error {
	wc := g.cfg.Audit.Webhook
	if !wc.Enabled() {
		return nil
	}
	var token string
	if wc.TokenFile != "" {
		b, err := os.ReadFile(wc.TokenFile)
		if err != nil {
			return fmt.Errorf("audit.webhook.tokenFile: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	var cas *x509.CertPool
	if wc.ClientCAFile != "" {
		pem, err := os.ReadFile(wc.ClientCAFile)
		if err != nil {
			return fmt.Errorf("audit.webhook.clientCAFile: %w", err)
		}
		cas = x509.NewCertPool()
		if !cas.AppendCertsFromPEM(pem) {
			return fmt.Errorf("audit.webhook.clientCAFile %s: no PEM certificate in it", wc.ClientCAFile)
		}
		// Asked for, never required, and verified by the receiver alone: kubectl users who
		// send a certificate of another CA must still get through the handshake.
		g.tls.ClientAuth = tls.RequestClientCert
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kaccess_audit_webhook_events_total",
		Help: "Events from the API servers' audit webhooks: stored, duplicate (a retried batch), gateway (the gateway's own request, already on record), stage (a stage not kept).",
	}, []string{"cluster", "outcome"})
	g.metrics.registry.MustRegister(events)
	for _, cl := range g.clusters {
		name := cl.Name
		for _, outcome := range []string{"stored", "duplicate", "gateway", "stage"} {
			events.WithLabelValues(name, outcome) // at 0 from the start, for rate() and increase()
		}
		recv, err := webhook.New(webhook.Config{
			Cluster: name, Recorder: g.audit.capture, Token: token, ClientCAs: cas, ClientNames: wc.ClientNames,
			GatewayUsers:  gatewayIdentity(cl),
			Redactor:      &event.Redactor{MaxBodyBytes: g.cfg.Audit.MaxBodyBytes},
			MaxBatchBytes: wc.MaxBatchBytes, Logger: g.log,
			OnBatch: func(counts map[string]int) {
				for outcome, n := range counts {
					events.WithLabelValues(name, outcome).Add(float64(n))
				}
			},
		})
		if err != nil {
			return err
		}
		mux.Handle(webhookPath+name, recv)
	}
	return nil
}

// gatewayIdentity asks the API server who the gateway is there (a SelfSubjectReview, which
// every authenticated identity may create): its impersonated requests are the gateway's own.
func gatewayIdentity(cl *upstream.Cluster) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		res, err := cl.Client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("who is the gateway on cluster %s: %w", cl.Name, err)
		}
		return []string{res.Status.UserInfo.Username}, nil
	}
}
