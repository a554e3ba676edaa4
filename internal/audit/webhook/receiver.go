// Package webhook receives kube-apiserver's own audit events (its webhook backend posts
// audit.k8s.io/v1 EventList batches) into the same record as the gateway's: every request that
// reached the API server, through the gateway or around it, ends up in one store.
//
// A batch is answered 200 only once every record of it is fsynced in the spool: the API server
// forgets a batch when it is answered, and retries one that is not, so nothing is lost while
// the gateway is down or its spool is full. Events the gateway itself caused (its identity
// impersonating a user, with the gateway's request id as audit ID) are already on record as the
// gateway's own rows and are not stored twice. Retried batches are recognised by (auditID,
// stage).
package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/kubestatus"
)

// GatewayOwnKey marks, in Extra, the API server's events of the gateway's own identity acting
// as itself.
const GatewayOwnKey = "kaccess.io/gateway-own"

// Recorder makes a batch of records durable: it returns once all are fsynced, or an error
// when they cannot be (the spool is full or failing), in which case none may count as stored.
type Recorder interface {
	RecordBatch(events []*event.Event) error
}

// Config configures a Receiver for one cluster's API server.
type Config struct {
	// Cluster is the name the records carry.
	Cluster string
	// Recorder is where records go (the gateway's capture, and so its spool).
	Recorder Recorder
	// Token is the bearer token the API server's webhook kubeconfig sends; empty: none accepted.
	Token string
	// ClientCAs verifies client certificates, whose subject common name or DNS name must be one
	// of ClientNames; nil: none accepted.
	ClientCAs   *x509.CertPool
	ClientNames []string
	// GatewayUsers returns the identities the gateway uses on this cluster: their impersonated
	// requests are the gateway's own rows already. An error keeps such events (stored twice
	// rather than lost) and is retried at the next batch.
	GatewayUsers func(ctx context.Context) ([]string, error)
	// Redactor cleans recorded bodies (Secret data) whatever the API server's policy kept.
	Redactor *event.Redactor
	// MaxBatchBytes bounds one batch (default 32 MiB).
	MaxBatchBytes int64
	// OnBatch, when set, counts outcomes: stored, duplicate, gateway (joined to the gateway's
	// own row), stage (a stage kept out of the record).
	OnBatch func(counts map[string]int)
	Logger  *slog.Logger
	Now     func() time.Time
}

// Receiver is the http.Handler the API server's webhook posts to.
type Receiver struct {
	cfg    Config
	tokenH [32]byte
	recent *recent

	mu       sync.Mutex
	gateway  []string
	resolved bool
}

// New checks cfg and returns a Receiver.
func New(cfg Config) (*Receiver, error) {
	if cfg.Recorder == nil {
		return nil, errors.New("audit webhook: Recorder is required")
	}
	if cfg.Token == "" && cfg.ClientCAs == nil {
		return nil, errors.New("audit webhook: set a token or client CAs: an open receiver would let anyone write the audit record")
	}
	if cfg.ClientCAs != nil && len(cfg.ClientNames) == 0 {
		return nil, errors.New("audit webhook: client CAs need the client names to accept")
	}
	if cfg.Redactor == nil {
		cfg.Redactor = &event.Redactor{}
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 32 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnBatch == nil {
		cfg.OnBatch = func(map[string]int) {}
	}
	r := &Receiver{cfg: cfg, recent: newRecent(10*time.Minute, 200_000, cfg.Now)}
	if cfg.Token != "" {
		r.tokenH = sha256.Sum256([]byte(cfg.Token))
	}
	return r, nil
}

// ServeHTTP takes one EventList batch.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		kubestatus.Write(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "the audit webhook takes POSTed audit.k8s.io/v1 EventList batches")
		return
	}
	if !r.authenticated(req) {
		r.cfg.Logger.WarnContext(req.Context(), "audit webhook: unauthenticated batch refused", "remote", req.RemoteAddr, "cluster", r.cfg.Cluster)
		kubestatus.Unauthorized(w, "the audit webhook needs the token or client certificate of the API server's webhook kubeconfig")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBatchBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			kubestatus.Write(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
				fmt.Sprintf("audit batch over %d bytes; lower --audit-webhook-batch-max-size on the API server", tooBig.Limit))
			return
		}
		kubestatus.BadRequest(w, "reading the audit batch: "+err.Error())
		return
	}
	var list auditv1.EventList
	if err := json.Unmarshal(body, &list); err != nil {
		kubestatus.BadRequest(w, "the body is not an audit.k8s.io/v1 EventList: "+err.Error())
		return
	}
	if list.APIVersion != "" && list.APIVersion != auditv1.SchemeGroupVersion.String() {
		kubestatus.BadRequest(w, fmt.Sprintf("audit batch of %s; set --audit-webhook-version=%s on the API server", list.APIVersion, auditv1.SchemeGroupVersion))
		return
	}
	records, keys, counts := r.pick(req.Context(), list.Items)
	if len(records) > 0 {
		if err := r.cfg.Recorder.RecordBatch(records); err != nil {
			r.cfg.Logger.ErrorContext(req.Context(), "audit webhook: batch not recorded; the API server will retry it",
				"cluster", r.cfg.Cluster, "events", len(records), "error", err.Error())
			w.Header().Set("Retry-After", "5")
			kubestatus.Write(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the gateway cannot record audit events right now; retry")
			return
		}
		r.recent.add(keys)
	}
	r.cfg.OnBatch(counts)
	w.WriteHeader(http.StatusOK)
}

// pick maps the batch to the records to store, leaving out what is already on record.
func (r *Receiver) pick(ctx context.Context, items []auditv1.Event) ([]*event.Event, []string, map[string]int) {
	gateway := r.gatewayUsers(ctx)
	counts := map[string]int{}
	records := make([]*event.Event, 0, len(items))
	keys := make([]string, 0, len(items))
	inBatch := make(map[string]struct{}, len(items))
	for i := range items {
		ev := &items[i]
		stage, ok := stageOf(ev)
		if !ok {
			counts["stage"]++
			continue
		}
		if ev.ImpersonatedUser != nil && slices.Contains(gateway, ev.User.Username) {
			counts["gateway"]++
			continue
		}
		key := string(ev.AuditID) + "/" + string(ev.Stage)
		if _, dup := inBatch[key]; dup || r.recent.seen(key) {
			counts["duplicate"]++
			continue
		}
		inBatch[key] = struct{}{}
		e := toEvent(ev, stage, r.cfg.Cluster, r.cfg.Redactor)
		if slices.Contains(gateway, ev.User.Username) {
			// The gateway's own calls (SubjectAccessReviews, RBAC sync, leases): on record,
			// marked, so they are never mistaken for someone going around the gateway.
			if e.Extra == nil {
				e.Extra = map[string]string{}
			}
			e.Extra[GatewayOwnKey] = "true"
		}
		records = append(records, e)
		keys = append(keys, key)
		counts["stored"]++
	}
	return records, keys, counts
}

// gatewayUsers resolves the gateway's identities once; until it succeeds, nothing is joined.
func (r *Receiver) gatewayUsers(ctx context.Context) []string {
	if r.cfg.GatewayUsers == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resolved {
		return r.gateway
	}
	users, err := r.cfg.GatewayUsers(ctx)
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "audit webhook: the gateway's own identity is not known yet; its impersonated requests are stored as the API server saw them too",
			"cluster", r.cfg.Cluster, "error", err.Error())
		return nil
	}
	r.gateway, r.resolved = users, true
	return users
}

// authenticated accepts the configured bearer token or a verified client certificate.
func (r *Receiver) authenticated(req *http.Request) bool {
	if r.cfg.Token != "" {
		if auth := req.Header.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
			got := sha256.Sum256([]byte(strings.TrimSpace(auth[7:])))
			if subtle.ConstantTimeCompare(got[:], r.tokenH[:]) == 1 {
				return true
			}
		}
	}
	if r.cfg.ClientCAs == nil || req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		return false
	}
	leaf := req.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range req.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.cfg.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: r.cfg.Now()}); err != nil {
		return false
	}
	names := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
	return slices.ContainsFunc(names, func(n string) bool { return n != "" && slices.Contains(r.cfg.ClientNames, n) })
}
