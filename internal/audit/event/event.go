// Package event is the audit record of kaccess: one Event per request through the proxy and per
// gateway state change (login, token issued, grant, ...), its compact spool encoding, the audit
// policy that decides how much of a request is kept (Kubernetes' own audit.k8s.io/v1 Policy,
// evaluated by k8s.io/apiserver's code), and the redaction applied to every body whatever the
// policy says.
package event

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kaccess/kaccess/internal/authn"
)

// Kind says what an event records.
type Kind string

// Kinds of events. A request through the proxy is KindRequest; the others are state changes of
// the gateway, with their details in Event.Extra.
const (
	KindRequest       Kind = "request"
	KindLogin         Kind = "login"
	KindLoginFailed   Kind = "login_failed"
	KindLogout        Kind = "logout"
	KindTokenIssued   Kind = "token_issued"
	KindTokenRevoked  Kind = "token_revoked"
	KindAccessRequest Kind = "access_request"
	KindGrant         Kind = "grant"
	KindGrantRevoked  Kind = "grant_revoked"
	KindRBACChange    Kind = "rbac_change"
	KindAuditQuery    Kind = "audit_query" // a search, tail, export, aggregate or detection run of the audit record
	// KindSpoolFull covers a time the audit spool could not take records: how many requests
	// were refused (or, under onFull: drop, went unrecorded), from when until when.
	KindSpoolFull Kind = "spool_full"
	// KindFinding is a change of state of a scheduled detection's finding: it fired, was
	// silenced by a suppression, acknowledged by an auditor, or resolved.
	KindFinding Kind = "finding"
)

// Stage says which part of a request an event records.
type Stage string

// Stages. Ordinary requests have one event, StageComplete. Long-running ones (watch, exec, attach,
// port-forward, follow logs) have a StageStarted event when the response starts and a StageEnded
// event, with Duration, when it ends.
const (
	StageComplete Stage = "complete"
	StageStarted  Stage = "started"
	StageEnded    Stage = "ended"
)

// Decision says how a request ended, from the point of view of access: what the API server
// allowed or denied, what the gateway refused before the API server saw it, and what failed.
type Decision string

// Decisions. Capture decides them from where the answer came from (see capture's outcome), not
// from the status code alone: a 400 the gateway sent for a smuggled header is "refused", a 404
// from the API server is "allow" (Kubernetes' own audit would show it authorized).
const (
	DecisionAllow   Decision = "allow"   // the API server authorized it (any answer after authorization: 2xx, 404, 409, 422, ...)
	DecisionDeny    Decision = "deny"    // the API server refused it (403)
	DecisionRefused Decision = "refused" // the gateway refused it before forwarding; RefusalReason says why
	DecisionError   Decision = "error"   // it failed: the API server answered 5xx (or 401/429 before authorizing), or the gateway lost it on the way
)

// DecisionFor derives a decision from a status code alone, for records that have nothing better
// (state changes of the gateway, rows written before refusal reasons existed): 401 and 403 are
// refusals, 5xx and 0 (no response) are errors, anything else means it went through.
func DecisionFor(code int) Decision {
	switch {
	case code == 401 || code == 403:
		return DecisionDeny
	case code == 0 || code >= 500:
		return DecisionError
	default:
		return DecisionAllow
	}
}

// Event is one audit record. Empty strings, nil slices and zero numbers mean "not applicable"
// (the store has no NULLs). Times are UTC with microsecond precision once encoded.
type Event struct {
	Time    time.Time // when the request was received (or the state changed)
	EventID string    // UUIDv7, unique per event
	Kind    Kind
	Stage   Stage

	Cluster         string
	GatewayInstance string // the spool's instance id; with Seq it makes gaps detectable
	RequestID       string // the gateway's request id, shared by the started/ended pair
	// Seq is the record's sequence number in its gateway's spool. It is not part of the spool
	// encoding (the spool frames it); the shipper sets it, with GatewayInstance, before a
	// batch goes to the store.
	Seq uint64

	User          string
	UID           string
	Groups        []string
	Source        string // identity source, e.g. "session", "ldap:corp"
	SessionIDHash string // HashSessionID of the session id: never the id or a token itself

	ImpersonatedUser   string // kubectl --as
	ImpersonatedGroups []string
	GrantIDs           []string // access grants in force for the request

	SourceIP  string
	UserAgent string

	Verb        string
	APIGroup    string
	APIVersion  string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	RequestURI  string
	Method      string

	ResponseCode int
	Decision     Decision
	// RefusalReason is why the gateway answered itself (refused, or failed on its side), e.g.
	// "identity_header" or "upstream_timeout"; empty when the answer is the API server's.
	RefusalReason string
	Latency       time.Duration // until the response started (whole request when not long-running)
	Duration      time.Duration // long-running requests, on the ended event
	BytesIn       int64
	BytesOut      int64

	Level        Level           // audit level the policy chose
	RequestBody  json.RawMessage // redacted; only at Request level and above
	ResponseBody json.RawMessage // redacted; only at RequestResponse

	Extra map[string]string // state-change details (e.g. "grant_id", "approver")
}

// New returns an event of the given kind at now, with a fresh UUIDv7 and StageComplete.
func New(kind Kind, now time.Time) *Event {
	return &Event{
		Time:    now.UTC().Truncate(time.Microsecond),
		EventID: NewID(),
		Kind:    kind,
		Stage:   StageComplete,
	}
}

// NewID returns a new UUIDv7 as a string: time-ordered, so ids sort roughly by time.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// HashSessionID is authn.HashSessionID: what a record keeps of a session id.
func HashSessionID(id string) string { return authn.HashSessionID(id) }

// SetIdentity copies who made the request. A nil identity leaves the fields empty
// (unauthenticated request).
func (e *Event) SetIdentity(id *authn.Identity) {
	if id == nil {
		return
	}
	e.User, e.UID, e.Source = id.User, id.UID, id.Source
	e.Groups = append(e.Groups[:0], id.Groups...)
	e.SessionIDHash = HashSessionID(id.SessionID)
}

// SetRequestInfo copies what the request asks for, as parsed by k8s.io/apiserver.
func (e *Event) SetRequestInfo(info *genericrequest.RequestInfo) {
	if info == nil {
		return
	}
	e.Verb = info.Verb
	e.APIGroup, e.APIVersion = info.APIGroup, info.APIVersion
	e.Resource, e.Subresource = info.Resource, info.Subresource
	e.Namespace, e.Name = info.Namespace, info.Name
}

// SetStateOutcome records what the API answered for a state change and the decision that
// stands for, as for requests the gateway answered itself: allow for 2xx (it was done),
// refused for 4xx other than 499 (the gateway said no; reason says why), error for the rest (it
// failed: 5xx, 499 for a caller that gave up; reason says what). code is an HTTP status, the
// one the REST API answers (grpc-gateway's mapping of the gRPC code).
func (e *Event) SetStateOutcome(code int, reason string) {
	e.ResponseCode = code
	switch {
	case code >= 200 && code < 300:
		e.Decision, e.RefusalReason = DecisionAllow, ""
	case code >= 400 && code < 500 && code != 499:
		e.Decision, e.RefusalReason = DecisionRefused, reason
	default:
		e.Decision, e.RefusalReason = DecisionError, reason
	}
}

// SetResponse records the status code and the decision derived from it.
func (e *Event) SetResponse(code int) {
	e.ResponseCode = code
	e.Decision = DecisionFor(code)
}
