package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Audit configures the record of every request: capture, the spool on local disk, and the
// store the records are shipped to.
type Audit struct {
	// PolicyFile is an audit.k8s.io/v1 Policy (kube-apiserver's format) deciding how much of
	// each request is kept. Empty: kaccess' default policy (every request at Metadata, writes
	// with their request body, RBAC and webhook writes with both bodies).
	PolicyFile string `json:"policyFile"`
	// MaxBodyBytes caps a recorded (redacted) body; larger ones are cut with a marker.
	MaxBodyBytes int `json:"maxBodyBytes"`
	// OnFull: "deny" (default) refuses new requests with 503 while the spool is full;
	// "drop" lets them through unrecorded, counted in kaccess_audit_dropped_total.
	OnFull string `json:"onFull"`
	// Strict holds each response until its record is fsynced (a machine crash loses
	// nothing; costs latency). Otherwise records are fsynced within spool.syncInterval.
	Strict bool `json:"strict"`
	// Spool is the durable queue on local disk between capture and the store.
	Spool AuditSpool `json:"spool"`
	// Batch bounds the inserts into the store.
	Batch AuditBatch `json:"batch"`
	// Retention is how long the store keeps events (a TTL on the table).
	Retention Duration `json:"retention"`
	// ClickHouse selects a ClickHouse server (or cluster) as the store. Without it, records
	// go to the embedded store (chDB) under Embedded.Dir.
	ClickHouse *AuditClickHouse `json:"clickhouse"`
	// Embedded configures the embedded store, used when ClickHouse is not set.
	Embedded AuditEmbedded `json:"embedded"`
	// RecordRequests (default true) records every request through the proxy. false leaves
	// them unrecorded (logins, tokens, grants and RBAC changes are still recorded): it exists
	// to measure what recording costs (make bench-proxy), never for production, and the
	// gateway warns at start.
	RecordRequests *bool `json:"recordRequests"`
	// AuditorGroups may search, tail, export and run detections over everyone's events
	// (AuditService, kaccess audit). Everyone else sees only their own events.
	AuditorGroups []string `json:"auditorGroups"`
	// Webhook receives the API servers' own audit events (their --audit-webhook-config-file
	// points at https://<gateway>/audit-webhook/<cluster>), so requests that bypass the
	// gateway are on the same record. Off unless a token file or client CA is set.
	Webhook AuditWebhook `json:"webhook"`
}

// AuditWebhook authenticates the API servers posting their audit events.
type AuditWebhook struct {
	// TokenFile holds the bearer token of the webhook kubeconfig (users[].user.token); at
	// least 32 characters.
	TokenFile string `json:"tokenFile"`
	// ClientCAFile verifies client certificates of the webhook kubeconfig instead (or as
	// well); ClientNames are the certificate names (CN or DNS SAN) accepted.
	ClientCAFile string   `json:"clientCAFile"`
	ClientNames  []string `json:"clientNames"`
	// MaxBatchBytes bounds one batch (default 32 MiB).
	MaxBatchBytes int64 `json:"maxBatchBytes"`
}

// Enabled reports whether the receiver is configured.
func (w AuditWebhook) Enabled() bool { return w.TokenFile != "" || w.ClientCAFile != "" }

// AuditSpool is the on-disk spool.
type AuditSpool struct {
	// Dir holds the segments. Default <stateDir>/audit/spool. Keep it on a local disk.
	Dir string `json:"dir"`
	// MaxBytes caps the spool; at the cap, onFull applies. Default 1 GiB.
	MaxBytes int64 `json:"maxBytes"`
	// SyncInterval is the group commit interval (default 100ms): the most a machine crash
	// can lose outside strict mode.
	SyncInterval Duration `json:"syncInterval"`
}

// AuditBatch bounds inserts.
type AuditBatch struct {
	// MaxEvents per insert (default 50000; ClickHouse likes 10k-100k rows an insert).
	MaxEvents int `json:"maxEvents"`
	// FlushInterval is the longest a record waits in the spool for a fuller batch (default 1s).
	FlushInterval Duration `json:"flushInterval"`
}

// AuditClickHouse is a ClickHouse server or cluster, reached over the native protocol.
type AuditClickHouse struct {
	// Addresses are host:port of the native protocol (9000, or 9440 with TLS); several for
	// failover.
	Addresses []string `json:"addresses"`
	// Database holding the audit tables (created by the migrations). Default "kaccess".
	Database string `json:"database"`
	// Username and PasswordFile (a file, so the password is never in the config or logs).
	Username     string `json:"username"`
	PasswordFile string `json:"passwordFile"`
	// TLS: connect with TLS, trusting CAFile (system roots when empty).
	TLS    bool   `json:"tls"`
	CAFile string `json:"caFile"`
	// Cluster, when set, creates replicated tables ON CLUSTER with a Distributed table in
	// front; empty means a single server.
	Cluster string `json:"cluster"`
}

// AuditEmbedded is the embedded ClickHouse engine (chDB), run by the kaccess-chdb helper.
type AuditEmbedded struct {
	// Dir holds the engine's data. Default <stateDir>/audit/chdb.
	Dir string `json:"dir"`
	// Library is libchdb.so. Default: $CHDB_LIB_PATH, then /usr/local/lib/libchdb.so.
	Library string `json:"library"`
	// Helper is the kaccess-chdb binary. Default: next to the gateway binary, then PATH.
	Helper string `json:"helper"`
}

func (a *Audit) setDefaults(stateDir string) {
	setString(&a.OnFull, "deny")
	setString(&a.Spool.Dir, stateDir+"/audit/spool")
	if a.Spool.MaxBytes == 0 {
		a.Spool.MaxBytes = 1 << 30
	}
	setDuration(&a.Spool.SyncInterval, 100*time.Millisecond)
	if a.Batch.MaxEvents == 0 {
		a.Batch.MaxEvents = 50_000
	}
	setDuration(&a.Batch.FlushInterval, time.Second)
	setDuration(&a.Retention, 400*24*time.Hour)
	if a.MaxBodyBytes == 0 {
		a.MaxBodyBytes = 64 << 10
	}
	if a.ClickHouse != nil {
		setString(&a.ClickHouse.Database, "kaccess")
	}
	setString(&a.Embedded.Dir, stateDir+"/audit/chdb")
	if a.Webhook.MaxBatchBytes == 0 {
		a.Webhook.MaxBatchBytes = 32 << 20
	}
	if a.RecordRequests == nil {
		on := true
		a.RecordRequests = &on
	}
}

// RecordsRequests reports whether requests through the proxy are recorded (the default).
func (a *Audit) RecordsRequests() bool { return a.RecordRequests == nil || *a.RecordRequests }

func (a *Audit) validate(p *problems) {
	if a.OnFull != "deny" && a.OnFull != "drop" {
		p.add("audit.onFull", "must be deny (refuse requests that cannot be recorded) or drop; got %q", a.OnFull)
	}
	if a.Spool.MaxBytes < 16<<20 {
		p.add("audit.spool.maxBytes", "must be at least 16 MiB (16777216), got %d", a.Spool.MaxBytes)
	}
	if d := a.Spool.SyncInterval.D(); d <= 0 || d > 10*time.Second {
		p.add("audit.spool.syncInterval", "must be between 1ms and 10s, got %s", d)
	}
	if a.Batch.MaxEvents < 1 || a.Batch.MaxEvents > 1_000_000 {
		p.add("audit.batch.maxEvents", "must be between 1 and 1000000, got %d", a.Batch.MaxEvents)
	}
	if d := a.Batch.FlushInterval.D(); d <= 0 {
		p.add("audit.batch.flushInterval", "must be positive, got %s", d)
	}
	if d := a.Retention.D(); d < 24*time.Hour {
		p.add("audit.retention", "must be at least 24h (partitions are days), got %s", d)
	}
	if !a.RecordsRequests() && a.Strict {
		p.add("audit.strict", "has no effect with audit.recordRequests: false (no request is recorded); remove one of them")
	}
	if a.MaxBodyBytes < 0 {
		p.add("audit.maxBodyBytes", "must not be negative, got %d", a.MaxBodyBytes)
	}
	if wh := a.Webhook; wh.Enabled() {
		if wh.TokenFile != "" {
			if tok, err := os.ReadFile(wh.TokenFile); err != nil {
				p.add("audit.webhook.tokenFile", "cannot be read: %v", err)
			} else if len(strings.TrimSpace(string(tok))) < 32 {
				p.add("audit.webhook.tokenFile", "holds a token of %d characters; use at least 32 (e.g. openssl rand -hex 32)", len(strings.TrimSpace(string(tok))))
			}
		}
		if wh.ClientCAFile != "" && len(wh.ClientNames) == 0 {
			p.add("audit.webhook.clientNames", "required with clientCAFile: the certificate names (CN or DNS SAN) of the API servers")
		}
		if wh.ClientCAFile == "" && len(wh.ClientNames) > 0 {
			p.add("audit.webhook.clientCAFile", "required with clientNames: the CA that signs the API servers' client certificates")
		}
		if wh.MaxBatchBytes < 1<<20 {
			p.add("audit.webhook.maxBatchBytes", "must be at least 1 MiB (1048576), got %d", wh.MaxBatchBytes)
		}
	}
	if ch := a.ClickHouse; ch != nil {
		if len(ch.Addresses) == 0 {
			p.add("audit.clickhouse.addresses", "required: host:port of the native protocol, e.g. clickhouse:9000")
		}
		for i, addr := range ch.Addresses {
			checkAddress(p, fmt.Sprintf("audit.clickhouse.addresses[%d]", i), addr, true)
		}
		if ch.CAFile != "" && !ch.TLS {
			p.add("audit.clickhouse.caFile", "set tls: true as well, or the CA is never used")
		}
	}
}
