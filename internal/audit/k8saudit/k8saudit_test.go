package k8saudit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kaccess/kaccess/internal/audit/event"
)

var at = time.Date(2026, 11, 24, 9, 30, 0, 123456000, time.UTC)

// request is a configmap create by alice as the capture would record it.
func request() *event.Event {
	return &event.Event{
		Time: at, EventID: "0193a7c0-0000-7000-8000-000000000001", Kind: event.KindRequest, Stage: event.StageComplete,
		Cluster: "prod", GatewayInstance: "gw-1", Seq: 42, RequestID: "5b0d6c1e-8a43-4c61-9a39-1f0e6f1c2d3e",
		User: "alice", UID: "u-alice", Groups: []string{"devs"}, Source: "ldap:corp", SessionIDHash: "0123456789abcdef",
		GrantIDs: []string{"ar-1", "ar-2"}, SourceIP: "10.0.0.7", UserAgent: "kubectl/v1.37.0",
		Verb: "create", APIVersion: "v1", Resource: "configmaps", Namespace: "shop",
		RequestURI: "/api/v1/namespaces/shop/configmaps?fieldManager=kubectl-create", Method: "POST",
		ResponseCode: 201, Decision: event.DecisionAllow, Latency: 1500 * time.Microsecond,
		Level:        event.LevelRequestResponse,
		RequestBody:  json.RawMessage(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"web"},"data":{"password":"<redacted>"}}`),
		ResponseBody: json.RawMessage(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"web","namespace":"shop","uid":"c1"}}`),
	}
}

// decoded is the exported line read back as a Kubernetes audit event.
func decoded(t *testing.T, e *event.Event) (auditv1.Event, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, e); err != nil {
		t.Fatal(err)
	}
	line := buf.Bytes()
	if bytes.Count(line, []byte("\n")) != 1 || !bytes.HasSuffix(line, []byte("\n")) {
		t.Fatalf("not one line: %q", line)
	}
	var ev auditv1.Event
	var raw map[string]any
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		t.Fatal(err)
	}
	return ev, raw
}

func TestToK8s(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		event func() *event.Event
		check func(t *testing.T, ev auditv1.Event, raw map[string]any)
	}{{
		name:  "create with redacted bodies",
		event: request,
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			want := map[string]any{
				"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
				"auditID": "5b0d6c1e-8a43-4c61-9a39-1f0e6f1c2d3e", "stage": "ResponseComplete",
				"requestURI": "/api/v1/namespaces/shop/configmaps?fieldManager=kubectl-create", "verb": "create",
				"requestReceivedTimestamp": "2026-11-24T09:30:00.123456Z", "stageTimestamp": "2026-11-24T09:30:00.124956Z",
				"userAgent": "kubectl/v1.37.0",
			}
			for k, v := range want {
				if raw[k] != v {
					t.Errorf("%s = %v, want %v", k, raw[k], v)
				}
			}
			if ev.User.Username != "alice" || ev.User.UID != "u-alice" || !reflect.DeepEqual(ev.User.Groups, []string{"devs"}) ||
				ev.User.Extra[UserExtraSource][0] != "ldap:corp" || ev.User.Extra[UserExtraSessionHash][0] != "0123456789abcdef" {
				t.Errorf("user = %+v", ev.User)
			}
			if ev.ImpersonatedUser != nil {
				t.Errorf("impersonatedUser = %+v without kubectl --as", ev.ImpersonatedUser)
			}
			if !reflect.DeepEqual(ev.SourceIPs, []string{"10.0.0.7"}) {
				t.Errorf("sourceIPs = %v", ev.SourceIPs)
			}
			// The name of a create comes from the request object, as the API server's does.
			ref := auditv1.ObjectReference{Resource: "configmaps", Namespace: "shop", Name: "web", APIVersion: "v1"}
			if ev.ObjectRef == nil || *ev.ObjectRef != ref {
				t.Errorf("objectRef = %+v, want %+v", ev.ObjectRef, ref)
			}
			if _, ok := raw["objectRef"].(map[string]any)["apiGroup"]; ok {
				t.Error("objectRef.apiGroup present for the core group (the API server omits it)")
			}
			st := raw["responseStatus"].(map[string]any)
			if st["code"] != float64(201) || len(st) != 2 || st["metadata"] == nil {
				t.Errorf("responseStatus = %v, want {metadata:{}, code:201}", st)
			}
			req := raw["requestObject"].(map[string]any)
			if req["data"].(map[string]any)["password"] != event.Redacted {
				t.Errorf("requestObject = %v, want the redacted body", req)
			}
			if raw["responseObject"].(map[string]any)["metadata"].(map[string]any)["uid"] != "c1" {
				t.Errorf("responseObject = %v", raw["responseObject"])
			}
			wantAnn := map[string]string{
				AnnotationAuthzDecision: "allow", AnnotationDecision: "allow", AnnotationCluster: "prod",
				AnnotationGatewayInstance: "gw-1", AnnotationSeq: "42", AnnotationGrantIDs: "ar-1,ar-2",
				AnnotationEventID: "0193a7c0-0000-7000-8000-000000000001",
			}
			if !reflect.DeepEqual(ev.Annotations, wantAnn) {
				t.Errorf("annotations = %v, want %v", ev.Annotations, wantAnn)
			}
		},
	}, {
		name: "refused by the gateway",
		event: func() *event.Event {
			e := request()
			e.Verb, e.Name, e.RequestURI = "get", "web", "/api/v1/namespaces/shop/configmaps/web"
			e.ImpersonatedUser, e.ImpersonatedGroups = "admin", []string{"ops"}
			e.ResponseCode, e.Decision, e.RefusalReason = 403, event.DecisionRefused, "impersonation_refused"
			e.Level, e.RequestBody, e.ResponseBody = event.LevelMetadata, nil, nil
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != "admin" || !reflect.DeepEqual(ev.ImpersonatedUser.Groups, []string{"ops"}) {
				t.Errorf("impersonatedUser = %+v", ev.ImpersonatedUser)
			}
			if ev.ResponseStatus == nil || ev.ResponseStatus.Code != 403 || ev.ResponseStatus.Status != "Failure" ||
				ev.ResponseStatus.Reason != "Forbidden" || ev.ResponseStatus.Message != "kaccess gateway: impersonation_refused" {
				t.Errorf("responseStatus = %+v", ev.ResponseStatus)
			}
			for k, v := range map[string]string{
				AnnotationAuthzDecision: "forbid", AnnotationAuthzReason: "refused by the kaccess gateway: impersonation_refused",
				AnnotationDecision: "refused", AnnotationRefusalReason: "impersonation_refused",
			} {
				if ev.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, ev.Annotations[k], v)
				}
			}
			if raw["level"] != "Metadata" || raw["requestObject"] != nil || raw["responseObject"] != nil {
				t.Errorf("level %v with bodies %v %v", raw["level"], raw["requestObject"], raw["responseObject"])
			}
		},
	}, {
		name: "denied by the API server, with its Status recorded",
		event: func() *event.Event {
			e := request()
			e.Verb, e.Resource, e.RequestURI, e.RequestBody = "list", "secrets", "/api/v1/namespaces/shop/secrets", nil
			e.ResponseCode, e.Decision = 403, event.DecisionDeny
			e.ResponseBody = json.RawMessage(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets is forbidden: User \"alice\" cannot list resource \"secrets\"","reason":"Forbidden","details":{"kind":"secrets"},"code":403}`)
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			st := ev.ResponseStatus
			if st == nil || st.Code != 403 || st.Reason != "Forbidden" || !strings.HasPrefix(st.Message, "secrets is forbidden") ||
				st.Details == nil || st.Details.Kind != "secrets" {
				t.Errorf("responseStatus = %+v, want the API server's Status", st)
			}
			if ev.Annotations[AnnotationAuthzDecision] != "forbid" || ev.Annotations[AnnotationAuthzReason] != "" {
				t.Errorf("annotations = %v", ev.Annotations)
			}
			if ev.ObjectRef.Name != "" {
				t.Errorf("objectRef.name %q on a list", ev.ObjectRef.Name)
			}
		},
	}, {
		name: "watch started",
		event: func() *event.Event {
			e := request()
			e.Stage, e.Verb, e.RequestURI, e.Level = event.StageStarted, "watch", "/api/v1/namespaces/shop/configmaps?watch=true", event.LevelMetadata
			e.ResponseCode, e.RequestBody, e.ResponseBody = 200, nil, nil
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if ev.Stage != auditv1.StageResponseStarted || raw["stageTimestamp"] != "2026-11-24T09:30:00.124956Z" {
				t.Errorf("stage %s at %v", ev.Stage, raw["stageTimestamp"])
			}
		},
	}, {
		name: "watch ended",
		event: func() *event.Event {
			e := request()
			e.Stage, e.Verb, e.RequestURI, e.Level = event.StageEnded, "watch", "/api/v1/namespaces/shop/configmaps?watch=true", event.LevelMetadata
			e.ResponseCode, e.RequestBody, e.ResponseBody, e.Duration = 200, nil, nil, 90*time.Second
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if ev.Stage != auditv1.StageResponseComplete || raw["stageTimestamp"] != "2026-11-24T09:31:30.123456Z" {
				t.Errorf("stage %s at %v, want ResponseComplete after the stream's duration", ev.Stage, raw["stageTimestamp"])
			}
			if ev.AuditID != "5b0d6c1e-8a43-4c61-9a39-1f0e6f1c2d3e" {
				t.Errorf("auditID %s: the ended record must share the started one's", ev.AuditID)
			}
		},
	}, {
		name: "login",
		event: func() *event.Event {
			e := event.New(event.KindLogin, at)
			e.Source, e.Method, e.SourceIP = "ldap:corp", "gRPC", "10.0.0.7"
			e.User, e.UID, e.Groups = "alice", "u-alice", []string{"devs"}
			e.Extra = map[string]string{"method": "password", "expire_time": "2026-11-24T17:30:00Z"}
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if string(ev.AuditID) != ev.Annotations[AnnotationEventID] || ev.AuditID == "" {
				t.Errorf("auditID %q, want the event id", ev.AuditID)
			}
			if ev.Verb != "login" || ev.Level != auditv1.LevelMetadata || ev.Stage != auditv1.StageResponseComplete || ev.RequestURI != "" {
				t.Errorf("verb %q level %s stage %s uri %q", ev.Verb, ev.Level, ev.Stage, ev.RequestURI)
			}
			if ev.ObjectRef != nil || ev.ResponseStatus != nil {
				t.Errorf("objectRef %+v responseStatus %+v on a login", ev.ObjectRef, ev.ResponseStatus)
			}
			want := map[string]string{
				AnnotationKind: "login", AnnotationEventID: ev.Annotations[AnnotationEventID],
				AnnotationExtraPrefix + "method": "password", AnnotationExtraPrefix + "expire_time": "2026-11-24T17:30:00Z",
			}
			if !reflect.DeepEqual(ev.Annotations, want) {
				t.Errorf("annotations = %v, want %v", ev.Annotations, want)
			}
		},
	}, {
		name: "grant",
		event: func() *event.Event {
			e := event.New(event.KindGrant, at)
			e.Source, e.User, e.Groups = "kaccess", "bob", []string{"oncall"}
			e.APIGroup, e.APIVersion, e.Resource, e.Namespace, e.Name = "kaccess.io", "v1alpha1", "accessrequests", "kaccess-system", "ar-7"
			e.GrantIDs, e.Decision = []string{"ar-7"}, event.DecisionAllow
			e.Extra = map[string]string{"action": "approved", "grant_id": "ar-7"}
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			ref := auditv1.ObjectReference{Resource: "accessrequests", Namespace: "kaccess-system", Name: "ar-7", APIGroup: "kaccess.io", APIVersion: "v1alpha1"}
			if ev.Verb != "approved" || ev.ObjectRef == nil || *ev.ObjectRef != ref {
				t.Errorf("verb %q objectRef %+v", ev.Verb, ev.ObjectRef)
			}
			if ev.Annotations[AnnotationKind] != "grant" || ev.Annotations[AnnotationAuthzDecision] != "allow" ||
				ev.Annotations[AnnotationExtraPrefix+"grant_id"] != "ar-7" || ev.Annotations[AnnotationGrantIDs] != "ar-7" {
				t.Errorf("annotations = %v", ev.Annotations)
			}
		},
	}, {
		name: "audit query keeps its RPC as the verb",
		event: func() *event.Event {
			e := event.New(event.KindAuditQuery, at)
			e.User, e.Verb, e.ResponseCode, e.Decision = "sam", "ExportEvents", 200, event.DecisionAllow
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if ev.Verb != "ExportEvents" || ev.ResponseStatus == nil || ev.ResponseStatus.Code != 200 {
				t.Errorf("verb %q responseStatus %+v", ev.Verb, ev.ResponseStatus)
			}
		},
	}, {
		name: "unauthenticated, with a body that is not JSON",
		event: func() *event.Event {
			e := request()
			e.User, e.UID, e.Groups, e.Source, e.SessionIDHash, e.GrantIDs = "", "", nil, "", "", nil
			e.ResponseCode, e.Decision, e.RefusalReason = 401, event.DecisionRefused, "unauthenticated"
			e.ResponseBody = json.RawMessage(`not json`)
			return e
		},
		check: func(t *testing.T, ev auditv1.Event, raw map[string]any) {
			if u := raw["user"].(map[string]any); len(u) != 0 {
				t.Errorf("user = %v, want {} as the API server writes for a failed authentication", u)
			}
			if raw["responseObject"] != nil || ev.ResponseStatus.Reason != "Unauthorized" {
				t.Errorf("responseObject %v, status %+v", raw["responseObject"], ev.ResponseStatus)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, raw := decoded(t, tt.event())
			if ev.Kind != "Event" || ev.APIVersion != "audit.k8s.io/v1" {
				t.Errorf("kind %q apiVersion %q", ev.Kind, ev.APIVersion)
			}
			tt.check(t, ev, raw)
		})
	}
}

// TestEncodeIsTheLogBackendsFormat pins one line byte for byte: field order, microsecond
// times and HTML-safe escaping are those of kube-apiserver's --audit-log-format=json.
func TestEncodeIsTheLogBackendsFormat(t *testing.T) {
	t.Parallel()
	e := &event.Event{
		Time: at, EventID: "e1", Kind: event.KindRequest, Stage: event.StageComplete, RequestID: "r1",
		User: "alice", Groups: []string{"devs"}, SourceIP: "10.0.0.7", UserAgent: "curl/8",
		Verb: "list", APIVersion: "v1", Resource: "pods", Namespace: "shop",
		RequestURI: "/api/v1/namespaces/shop/pods?limit=5&watch=false", ResponseCode: 200,
		Decision: event.DecisionAllow, Latency: time.Millisecond, Level: event.LevelMetadata,
	}
	var buf bytes.Buffer
	if err := Encode(&buf, e); err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"r1","stage":"ResponseComplete",` +
		`"requestURI":"/api/v1/namespaces/shop/pods?limit=5\u0026watch=false","verb":"list","user":{"username":"alice","groups":["devs"]},` +
		`"sourceIPs":["10.0.0.7"],"userAgent":"curl/8","objectRef":{"resource":"pods","namespace":"shop","apiVersion":"v1"},` +
		`"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-24T09:30:00.123456Z",` +
		`"stageTimestamp":"2026-11-24T09:30:00.124456Z","annotations":{"authorization.k8s.io/decision":"allow",` +
		`"kaccess.io/decision":"allow","kaccess.io/event-id":"e1"}}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("line\n got %s\nwant %s", got, want)
	}
}
