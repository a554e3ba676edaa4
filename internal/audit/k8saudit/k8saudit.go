// Package k8saudit turns kaccess audit events into Kubernetes' own audit format,
// audit.k8s.io/v1 Event, so that tools written for kube-apiserver's audit log (Falco's k8saudit
// plugin, SIEM parsers of the API server's log backend) read a kaccess export unchanged.
//
// The mapping is pure: ToK8s looks at one event and nothing else. Encode writes the result with
// the encoder kube-apiserver's log backend uses (--audit-log-format=json), so key order, time
// format (RFC 3339 with microseconds) and escaping are the API server's.
//
// What a kaccess record says and Kubernetes has no field for goes into annotations under
// kaccess.io/ (see the constants). State changes of the gateway (login, access request, grant,
// ...) become events too, told apart by the kaccess.io/kind annotation: see ToK8s.
package k8saudit

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/audit"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Annotation keys. The first two are the ones kube-apiserver's authorization filter sets.
const (
	AnnotationAuthzDecision = "authorization.k8s.io/decision" // "allow" or "forbid"
	AnnotationAuthzReason   = "authorization.k8s.io/reason"

	AnnotationKind            = "kaccess.io/kind"             // a state change of the gateway: login, grant, ... (absent on requests)
	AnnotationEventID         = "kaccess.io/event-id"         // the record's own id (auditID is shared by a stream's started and ended records)
	AnnotationDecision        = "kaccess.io/decision"         // allow, deny, refused or error: who answered
	AnnotationRefusalReason   = "kaccess.io/refusal-reason"   // why the gateway answered itself
	AnnotationCluster         = "kaccess.io/cluster"          // the upstream cluster's name in the gateway's config
	AnnotationGatewayInstance = "kaccess.io/gateway-instance" // with kaccess.io/seq, makes gaps in the record visible
	AnnotationSeq             = "kaccess.io/seq"
	AnnotationGrantIDs        = "kaccess.io/grant-ids" // access grants in force, comma-separated
	AnnotationExtraPrefix     = "kaccess.io/extra."    // one per key of the record's extra details

	// UserExtraSource and UserExtraSessionHash go into user.extra, where kube-apiserver keeps
	// what an authenticator says about a user. The source key is the one the gateway also
	// sends to the API server when it impersonates (so both logs name it alike); the session
	// is only ever recorded as a hash.
	UserExtraSource      = "kaccess.io/source"
	UserExtraSessionHash = "kaccess.io/session-id-hash"
)

// Values of authorization.k8s.io/decision, as kube-apiserver writes them.
const (
	decisionAllow  = "allow"
	decisionForbid = "forbid"
)

// ToK8s maps one kaccess event to an audit.k8s.io/v1 Event.
//
// Requests through the proxy map field for field: auditID is the gateway's request id (which
// the gateway also sends to the API server as Audit-ID, so both logs join on it), user is who
// authenticated to the gateway and impersonatedUser whom they asked to act as (kubectl --as),
// the stage is ResponseStarted for the started record of a long-running request and
// ResponseComplete otherwise (a stream's ended record is its ResponseComplete, with the
// stream's duration in stageTimestamp), and requestObject/responseObject are the bodies as
// kaccess stored them: redacted, or a kaccess.omitted/kaccess.truncated marker.
//
// State changes (every kind but request) are events with kaccess.io/kind set to the kind, at
// level Metadata and stage ResponseComplete, auditID the event id, verb the change's own verb
// (the RPC of an audit query, the action of an access request or RBAC change) or else the kind
// itself ("login", "logout", ...), objectRef the object changed where there is one (the
// AccessRequest of access_request, grant and grant_revoked; the RBAC object of rbac_change), an
// empty requestURI (nothing was requested over HTTP) and their details as kaccess.io/extra.*
// annotations.
func ToK8s(e *event.Event) auditv1.Event {
	out := auditv1.Event{
		TypeMeta:                 metav1.TypeMeta{Kind: "Event", APIVersion: auditv1.SchemeGroupVersion.String()},
		Level:                    level(e.Level),
		AuditID:                  types.UID(e.RequestID),
		Stage:                    auditv1.StageResponseComplete,
		RequestURI:               e.RequestURI,
		Verb:                     e.Verb,
		User:                     userInfo(e),
		UserAgent:                e.UserAgent,
		RequestReceivedTimestamp: metav1.NewMicroTime(e.Time),
		StageTimestamp:           metav1.NewMicroTime(e.Time.Add(e.Latency)),
	}
	if out.AuditID == "" {
		out.AuditID = types.UID(e.EventID)
	}
	switch e.Stage {
	case event.StageStarted:
		out.Stage = auditv1.StageResponseStarted
	case event.StageEnded:
		out.StageTimestamp = metav1.NewMicroTime(e.Time.Add(e.Duration))
	}
	if e.Kind != event.KindRequest && out.Verb == "" {
		out.Verb = e.Extra["action"]
		if out.Verb == "" {
			out.Verb = string(e.Kind)
		}
	}
	if e.ImpersonatedUser != "" {
		out.ImpersonatedUser = &authnv1.UserInfo{Username: e.ImpersonatedUser, Groups: e.ImpersonatedGroups}
	}
	if e.SourceIP != "" {
		out.SourceIPs = []string{e.SourceIP}
	}
	out.ObjectRef = objectRef(e)
	if len(e.RequestBody) > 0 && json.Valid(e.RequestBody) {
		out.RequestObject = &runtime.Unknown{Raw: e.RequestBody, ContentType: runtime.ContentTypeJSON}
	}
	if len(e.ResponseBody) > 0 && json.Valid(e.ResponseBody) {
		out.ResponseObject = &runtime.Unknown{Raw: e.ResponseBody, ContentType: runtime.ContentTypeJSON}
	}
	out.ResponseStatus = responseStatus(e)
	out.Annotations = annotations(e)
	return out
}

// Encode writes ToK8s(e) as one line of JSON, exactly as kube-apiserver's log backend writes
// its events (--audit-log-format=json).
func Encode(w io.Writer, e *event.Event) error {
	ev := ToK8s(e)
	return encoder.Encode(&ev, w)
}

// encoder is the log backend's: audit.Codecs.LegacyCodec(audit.k8s.io/v1), a JSON serializer
// that ends each event with a line break.
var encoder = audit.Codecs.LegacyCodec(auditv1.SchemeGroupVersion)

func level(l event.Level) auditv1.Level {
	switch l {
	case event.LevelRequest, event.LevelRequestResponse:
		return auditv1.Level(l)
	}
	// Metadata, and state changes, which have no level of their own.
	return auditv1.LevelMetadata
}

func userInfo(e *event.Event) authnv1.UserInfo {
	u := authnv1.UserInfo{Username: e.User, UID: e.UID, Groups: e.Groups}
	if e.Source != "" || e.SessionIDHash != "" {
		u.Extra = map[string]authnv1.ExtraValue{}
		if e.Source != "" {
			u.Extra[UserExtraSource] = authnv1.ExtraValue{e.Source}
		}
		if e.SessionIDHash != "" {
			u.Extra[UserExtraSessionHash] = authnv1.ExtraValue{e.SessionIDHash}
		}
	}
	return u
}

// objectRef is set for resource requests, as kube-apiserver sets it. A create names no object
// in its path; for creates and updates the API server takes the name (and namespace, uid,
// resourceVersion) from the decoded request object, and so does this from the recorded request
// body when there is one. (A patch body is not the object, so it is not read.)
func objectRef(e *event.Event) *auditv1.ObjectReference {
	if e.Resource == "" {
		return nil
	}
	ref := &auditv1.ObjectReference{
		Resource: e.Resource, Subresource: e.Subresource, Namespace: e.Namespace, Name: e.Name,
		APIGroup: e.APIGroup, APIVersion: e.APIVersion,
	}
	if e.Kind != event.KindRequest || len(e.RequestBody) == 0 || (e.Verb != "create" && e.Verb != "update") {
		return ref
	}
	var body struct {
		Metadata struct {
			Name, Namespace, UID, ResourceVersion string
		} `json:"metadata"`
	}
	if json.Unmarshal(e.RequestBody, &body) != nil {
		return ref
	}
	m := body.Metadata
	if ref.Namespace == "" {
		ref.Namespace = m.Namespace
	}
	if ref.Name == "" {
		ref.Name = m.Name
	}
	ref.UID, ref.ResourceVersion = types.UID(m.UID), m.ResourceVersion
	return ref
}

// responseStatus is what kube-apiserver records of a response: the code, and for an answer that
// is a Status object (every error, some deletes) that object's status, reason, message and
// details. kaccess has the object only when the response body was recorded; otherwise a
// failure gets the reason its code stands for, and a gateway refusal a message naming the
// refusal reason.
func responseStatus(e *event.Event) *metav1.Status {
	if e.ResponseCode == 0 {
		return nil // no response (a stream's started record has its code; state changes may not)
	}
	st := &metav1.Status{Code: int32(e.ResponseCode)}
	var body metav1.Status
	if len(e.ResponseBody) > 0 && json.Unmarshal(e.ResponseBody, &body) == nil && body.Kind == "Status" {
		st.Status, st.Reason, st.Message, st.Details = body.Status, body.Reason, body.Message, body.Details
		return st
	}
	if e.ResponseCode >= 400 {
		st.Status = metav1.StatusFailure
		st.Reason = reasonFor(e.ResponseCode)
		if e.RefusalReason != "" {
			st.Message = "kaccess gateway: " + e.RefusalReason
		}
	}
	return st
}

// reasonFor is the StatusReason kube-apiserver gives a code.
func reasonFor(code int) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	case http.StatusNotAcceptable:
		return metav1.StatusReasonNotAcceptable
	case http.StatusConflict:
		return metav1.StatusReasonConflict
	case http.StatusGone:
		return metav1.StatusReasonExpired
	case http.StatusRequestEntityTooLarge:
		return metav1.StatusReasonRequestEntityTooLarge
	case http.StatusUnsupportedMediaType:
		return metav1.StatusReasonUnsupportedMediaType
	case http.StatusUnprocessableEntity:
		return metav1.StatusReasonInvalid
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	case http.StatusInternalServerError:
		return metav1.StatusReasonInternalError
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusGatewayTimeout:
		return metav1.StatusReasonTimeout
	}
	return metav1.StatusReasonUnknown
}

func annotations(e *event.Event) map[string]string {
	a := map[string]string{}
	// authorization.k8s.io/decision as kube-apiserver would have written it: allow for what the
	// API server authorized, forbid for what it or the gateway refused. An error may have
	// failed before or after authorization, so it gets none (nor do 401s in Kubernetes).
	switch e.Decision {
	case event.DecisionAllow:
		a[AnnotationAuthzDecision] = decisionAllow
	case event.DecisionDeny:
		a[AnnotationAuthzDecision] = decisionForbid
	case event.DecisionRefused:
		a[AnnotationAuthzDecision] = decisionForbid
		if e.RefusalReason != "" {
			a[AnnotationAuthzReason] = "refused by the kaccess gateway: " + e.RefusalReason
		}
	}
	if e.Kind != event.KindRequest {
		a[AnnotationKind] = string(e.Kind)
	}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(AnnotationEventID, e.EventID)
	set(AnnotationDecision, string(e.Decision))
	set(AnnotationRefusalReason, e.RefusalReason)
	set(AnnotationCluster, e.Cluster)
	set(AnnotationGatewayInstance, e.GatewayInstance)
	if e.GatewayInstance != "" || e.Seq != 0 {
		a[AnnotationSeq] = strconv.FormatUint(e.Seq, 10)
	}
	set(AnnotationGrantIDs, strings.Join(e.GrantIDs, ","))
	for k, v := range e.Extra {
		a[AnnotationExtraPrefix+k] = v
	}
	return a
}
