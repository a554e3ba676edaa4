package webhook

import (
	"strings"
	"time"

	"github.com/google/uuid"
	authnv1 "k8s.io/api/authentication/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Source is the identity source of every event the API server sent: its rows are the API
// server's own view, whoever the client was.
const Source = "apiserver"

// eventIDSpace makes event ids of API server events deterministic: the same (auditID, stage)
// always has the same event_id, so a batch the API server sent twice is recognisable even
// where the receiver could not drop the copy (another replica, a restart).
var eventIDSpace = uuid.MustParse("8f6b1c8e-7c1a-4a53-9f0e-6b1d3d6e2a51")

// annotationDecision is the API server's authorization decision ("allow" or "forbid").
const annotationDecision = "authorization.k8s.io/decision"

// stageOf maps an API server audit stage to a record stage; false for the stages kept out of
// the record (RequestReceived repeats what ResponseComplete says).
func stageOf(ev *auditv1.Event) (event.Stage, bool) {
	switch ev.Stage {
	case auditv1.StageResponseStarted:
		return event.StageStarted, true
	case auditv1.StageResponseComplete, auditv1.StagePanic:
		if longRunning(ev) {
			return event.StageEnded, true
		}
		return event.StageComplete, true
	}
	return "", false
}

// longRunning reports the requests that have a ResponseStarted stage before the end: watches,
// exec/attach/port-forward/proxy and followed logs.
func longRunning(ev *auditv1.Event) bool {
	if ev.Verb == "watch" {
		return true
	}
	if ref := ev.ObjectRef; ref != nil {
		switch ref.Subresource {
		case "exec", "attach", "portforward", "proxy":
			return true
		case "log":
			return strings.Contains(ev.RequestURI, "follow=true")
		}
	}
	return false
}

// toEvent maps one API server audit event to a kaccess record of cluster, with its bodies
// redacted as the gateway's own records are.
func toEvent(ev *auditv1.Event, stage event.Stage, cluster string, redactor *event.Redactor) *event.Event {
	e := &event.Event{
		Time:      ev.RequestReceivedTimestamp.UTC().Truncate(time.Microsecond),
		EventID:   uuid.NewSHA1(eventIDSpace, []byte(string(ev.AuditID)+"/"+string(ev.Stage))).String(),
		Kind:      event.KindRequest,
		Stage:     stage,
		Cluster:   cluster,
		RequestID: string(ev.AuditID),
		Source:    Source,
		UserAgent: ev.UserAgent,
		Verb:      ev.Verb,
		// The API server's audit event has no method; the verb says what was done.
		RequestURI: event.RedactURI(ev.RequestURI),
		Level:      event.Level(ev.Level),
	}
	setUser(e, &ev.User)
	if iu := ev.ImpersonatedUser; iu != nil {
		e.ImpersonatedUser, e.ImpersonatedGroups = iu.Username, iu.Groups
	}
	if len(ev.SourceIPs) > 0 {
		e.SourceIP = ev.SourceIPs[0]
	}
	if ref := ev.ObjectRef; ref != nil {
		e.APIGroup, e.APIVersion, e.Resource, e.Subresource = ref.APIGroup, ref.APIVersion, ref.Resource, ref.Subresource
		e.Namespace, e.Name = ref.Namespace, ref.Name
	}
	if rs := ev.ResponseStatus; rs != nil {
		e.ResponseCode = int(rs.Code)
	}
	e.Decision = decisionOf(ev, e.ResponseCode)
	if !ev.StageTimestamp.IsZero() && !ev.RequestReceivedTimestamp.IsZero() {
		d := ev.StageTimestamp.Sub(ev.RequestReceivedTimestamp.Time)
		if stage == event.StageEnded {
			e.Duration = d
		} else {
			e.Latency = d
		}
	}
	var req, res []byte
	if ev.RequestObject != nil {
		req = ev.RequestObject.Raw
	}
	if ev.ResponseObject != nil {
		res = ev.ResponseObject.Raw
	}
	// The API server's policy chose the level; Secret data is redacted whatever it chose.
	redactor.Capture(e, req, "application/json", res, "application/json")
	if len(ev.Annotations) > 0 {
		e.Extra = make(map[string]string, len(ev.Annotations))
		for k, v := range ev.Annotations {
			e.Extra[k] = v
		}
	}
	return e
}

func setUser(e *event.Event, u *authnv1.UserInfo) {
	e.User, e.UID, e.Groups = u.Username, u.UID, u.Groups
}

// decisionOf is the API server's own authorization decision when it recorded one; without
// it (authentication failed, or a stage before authorization), judged by the code.
func decisionOf(ev *auditv1.Event, code int) event.Decision {
	switch ev.Annotations[annotationDecision] {
	case "allow":
		if code >= 500 {
			return event.DecisionError
		}
		return event.DecisionAllow
	case "forbid":
		return event.DecisionDeny
	}
	switch {
	case code == 401 || code == 403:
		return event.DecisionDeny
	case code == 0 || code == 429 || code >= 500:
		return event.DecisionError
	}
	return event.DecisionAllow
}
