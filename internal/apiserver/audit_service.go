package apiserver

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/k8saudit"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/authn"
)

// AuditSearcher is what AuditService needs of the audit store: a *query.Engine.
type AuditSearcher interface {
	Search(ctx context.Context, req query.Request) ([]*event.Event, string, error)
	Export(ctx context.Context, req query.Request, fn func(*event.Event) error) (int64, error)
	Tail(ctx context.Context, req query.Request, fn func(*event.Event) error) error
	Aggregate(ctx context.Context, req query.AggregateRequest) ([]query.Count, error)
}

// Detector runs the built-in detections (internal/audit/detect, through a small adapter in
// the wiring). Its types are this package's, so the API does not depend on how detections
// are written.
type Detector interface {
	Detections() []DetectionInfo
	RunDetection(ctx context.Context, name string, from, to time.Time) ([]Finding, error)
}

// DetectionInfo describes one detection.
type DetectionInfo struct {
	Name, Title, Description, Severity string
	TechniqueID, TechniqueName         string // MITRE ATT&CK; empty where none fits
}

// Finding is what a detection found, with the ids of its evidence events.
type Finding struct {
	Detection, Severity, Cluster, Subject, Summary string
	FirstSeen, LastSeen                            time.Time
	Count                                          int64
	EventIDs                                       []string
}

// ErrUnknownDetection is returned by a Detector for a name it does not have.
var ErrUnknownDetection = errors.New("unknown detection")

// exportChunkBytes is the size of the HttpBody messages of an export.
const exportChunkBytes = 64 << 10

// auditService implements kaccess.v1.AuditService. Auditors (callers in one of the auditor
// groups) query every event; anyone else only their own, enforced by query.Request.OnlyUser
// rather than by rewriting their filter text.
type auditService struct {
	kaccessv1.UnimplementedAuditServiceServer

	events   AuditSearcher
	detector Detector // nil: no detections
	findings Findings // nil: no stored findings
	auditors []string
	audit    Recorder
	log      *slog.Logger
}

// scope is who is asking and what they may see.
type scope struct {
	id      authn.Identity
	auditor bool
}

func (a *auditService) scope(ctx context.Context) (scope, error) {
	id, ok := authn.IdentityFrom(ctx)
	if !ok || id.User == "" {
		return scope{}, status.Error(codes.Unauthenticated, authn.ErrNoCredential.Error())
	}
	auditor := slices.ContainsFunc(id.Groups, func(g string) bool { return slices.Contains(a.auditors, g) })
	return scope{id: *id, auditor: auditor}, nil
}

// onlyUser is the restriction a caller's queries carry: none for auditors, their own user for
// everyone else.
func (s scope) onlyUser() string {
	if s.auditor {
		return ""
	}
	return s.id.User
}

// record puts the query itself on the audit record. A query that cannot be recorded is not
// answered: reading the record must leave a trace like any other access.
func (a *auditService) record(ctx context.Context, s scope, rpc string, from, to time.Time, filter string, rows int64, detail map[string]string) error {
	// Time, id and stage are the recorder's to set, as for the other state events.
	e := stateEvent(ctx, event.KindAuditQuery, "")
	e.SetIdentity(&s.id)
	e.Verb = rpc
	e.SetStateOutcome(200, "")
	e.Extra = map[string]string{"rpc": rpc, "filter": filter, "scope": "own", "rows": strconv.FormatInt(rows, 10)}
	if s.auditor {
		e.Extra["scope"] = "all"
	}
	if !from.IsZero() {
		e.Extra["from"] = from.UTC().Format(time.RFC3339Nano)
	}
	if !to.IsZero() {
		e.Extra["to"] = to.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range detail {
		e.Extra[k] = v
	}
	if err := a.audit.Record(e); err != nil {
		a.log.ErrorContext(ctx, "audit query not recorded", "rpc", rpc, "user", s.id.User, "error", err.Error())
		return status.Error(codes.Unavailable, "the query could not be put on the audit record, so it was not run; try again later")
	}
	return nil
}

// failed records a query refused for what it asked (a bad filter or token: someone may be
// probing) and maps err as queryError does.
func (a *auditService) failed(ctx context.Context, s scope, rpc, filter string, err error) error {
	if errors.Is(err, query.ErrInvalid) {
		a.refused(ctx, s, rpc, filter, 400, err.Error())
	}
	return a.queryError(ctx, rpc, err)
}

// refused puts a refused query on the record with its status code and reason. The caller
// gets its refusal whether or not this works, so a failure is only logged.
func (a *auditService) refused(ctx context.Context, s scope, rpc, filter string, code int, reason string) {
	e := stateEvent(ctx, event.KindAuditQuery, "")
	e.SetIdentity(&s.id)
	e.Verb = rpc
	why := "invalid_query"
	if code == 403 {
		why = "not_an_auditor"
	}
	e.SetStateOutcome(code, why)
	e.Extra = map[string]string{"rpc": rpc, "filter": filter, "refused": reason}
	if err := a.audit.Record(e); err != nil {
		a.log.ErrorContext(ctx, "refused audit query not recorded", "rpc", rpc, "user", s.id.User, "error", err.Error())
	}
}

// queryError maps errors of internal/audit/query: the caller's mistakes are InvalidArgument
// with the message that says what to change; the store's failures are logged and reported
// without their detail.
func (a *auditService) queryError(ctx context.Context, rpc string, err error) error {
	switch {
	case errors.Is(err, query.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err // already a status, e.g. from a stream Send
	}
	a.log.ErrorContext(ctx, "audit query failed", "rpc", rpc, "error", err.Error())
	return status.Error(codes.Unavailable, "the audit store could not answer; try again later")
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func (a *auditService) SearchEvents(ctx context.Context, req *kaccessv1.SearchEventsRequest) (*kaccessv1.SearchEventsResponse, error) {
	s, err := a.scope(ctx)
	if err != nil {
		return nil, err
	}
	q := query.Request{
		From: timeOf(req.GetStartTime()), To: timeOf(req.GetEndTime()), Filter: req.GetFilter(), OrderBy: req.GetOrderBy(),
		OnlyUser: s.onlyUser(), PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(),
	}
	events, next, err := a.events.Search(ctx, q)
	if err != nil {
		return nil, a.failed(ctx, s, "SearchEvents", q.Filter, err)
	}
	if err := a.record(ctx, s, "SearchEvents", q.From, q.To, q.Filter, int64(len(events)), nil); err != nil {
		return nil, err
	}
	resp := &kaccessv1.SearchEventsResponse{NextPageToken: next, Events: make([]*kaccessv1.AuditEvent, len(events))}
	for i, e := range events {
		resp.Events[i] = toAuditEvent(e)
	}
	return resp, nil
}

func (a *auditService) TailEvents(req *kaccessv1.TailEventsRequest, stream grpc.ServerStreamingServer[kaccessv1.TailEventsResponse]) error {
	ctx := stream.Context()
	s, err := a.scope(ctx)
	if err != nil {
		return err
	}
	q := query.Request{From: timeOf(req.GetStartTime()), Filter: req.GetFilter(), OnlyUser: s.onlyUser()}
	// A bad filter is refused before the tail starts, not at its first poll.
	if _, err := query.Compile(q.Filter, "f"); err != nil {
		return a.failed(ctx, s, "TailEvents", q.Filter, err)
	}
	if err := a.record(ctx, s, "TailEvents", q.From, time.Time{}, q.Filter, 0, map[string]string{"phase": "start"}); err != nil {
		return err
	}
	var n int64
	err = a.events.Tail(ctx, q, func(e *event.Event) error {
		n++
		return stream.Send(&kaccessv1.TailEventsResponse{Event: toAuditEvent(e)})
	})
	// The end of a tail is recorded with what it sent; the caller is gone, so a failure to
	// record is only logged (the start is on the record already).
	_ = a.record(context.WithoutCancel(ctx), s, "TailEvents", q.From, time.Now(), q.Filter, n, map[string]string{"phase": "end"})
	if err != nil {
		return a.failed(ctx, s, "TailEvents", q.Filter, err)
	}
	return nil
}

func (a *auditService) ExportEvents(req *kaccessv1.ExportEventsRequest, stream grpc.ServerStreamingServer[httpbody.HttpBody]) error {
	ctx := stream.Context()
	s, err := a.scope(ctx)
	if err != nil {
		return err
	}
	q := query.Request{From: timeOf(req.GetStartTime()), To: timeOf(req.GetEndTime()), Filter: req.GetFilter(), OrderBy: "time asc", OnlyUser: s.onlyUser()}
	if _, err := query.Compile(q.Filter, "f"); err != nil {
		return a.failed(ctx, s, "ExportEvents", q.Filter, err)
	}
	format := req.GetFormat()
	// Kubernetes' format has room for the recorded bodies (requestObject, responseObject), which
	// detections such as Falco's read; the others are one line of metadata per event.
	q.Bodies = format == kaccessv1.ExportFormat_EXPORT_FORMAT_K8S
	if err := a.record(ctx, s, "ExportEvents", q.From, q.To, q.Filter, 0, map[string]string{"phase": "start", "format": format.String()}); err != nil {
		return err
	}
	w := newExportWriter(format, func(contentType string, data []byte) error {
		return stream.Send(&httpbody.HttpBody{ContentType: contentType, Data: data})
	})
	n, err := a.events.Export(ctx, q, w.write)
	if err == nil {
		err = w.flush()
	}
	_ = a.record(context.WithoutCancel(ctx), s, "ExportEvents", q.From, q.To, q.Filter, n, map[string]string{"phase": "end", "format": format.String()})
	if err != nil {
		return a.failed(ctx, s, "ExportEvents", q.Filter, err)
	}
	return nil
}

func (a *auditService) AggregateEvents(ctx context.Context, req *kaccessv1.AggregateEventsRequest) (*kaccessv1.AggregateEventsResponse, error) {
	s, err := a.scope(ctx)
	if err != nil {
		return nil, err
	}
	bucket := time.Hour
	if req.GetBucket() != nil {
		bucket = req.GetBucket().AsDuration()
	}
	q := query.AggregateRequest{
		From: timeOf(req.GetStartTime()), To: timeOf(req.GetEndTime()), Filter: req.GetFilter(),
		OnlyUser: s.onlyUser(), Bucket: bucket, GroupBy: req.GetGroupBy(),
	}
	counts, err := a.events.Aggregate(ctx, q)
	if err != nil {
		return nil, a.failed(ctx, s, "AggregateEvents", q.Filter, err)
	}
	if err := a.record(ctx, s, "AggregateEvents", q.From, q.To, q.Filter, int64(len(counts)), map[string]string{"group_by": strings.Join(q.GroupBy, ",")}); err != nil {
		return nil, err
	}
	resp := &kaccessv1.AggregateEventsResponse{Counts: make([]*kaccessv1.EventCount, len(counts))}
	for i, c := range counts {
		resp.Counts[i] = &kaccessv1.EventCount{BucketTime: timestamppb.New(c.Bucket), Group: c.Group, Count: c.Count}
	}
	return resp, nil
}

func (a *auditService) ListDetections(ctx context.Context, _ *kaccessv1.ListDetectionsRequest) (*kaccessv1.ListDetectionsResponse, error) {
	if _, err := a.scope(ctx); err != nil {
		return nil, err
	}
	resp := &kaccessv1.ListDetectionsResponse{}
	if a.detector == nil {
		return resp, nil
	}
	for _, d := range a.detector.Detections() {
		resp.Detections = append(resp.Detections, &kaccessv1.Detection{
			Name: d.Name, Title: d.Title, Description: d.Description, Severity: d.Severity,
			MitreTechnique: d.TechniqueID, MitreTechniqueName: d.TechniqueName,
		})
	}
	return resp, nil
}

// RunDetections is for auditors only: a detection looks across everyone's events, and its
// findings name other people.
func (a *auditService) RunDetections(ctx context.Context, req *kaccessv1.RunDetectionsRequest) (*kaccessv1.RunDetectionsResponse, error) {
	s, err := a.scope(ctx)
	if err != nil {
		return nil, err
	}
	if !s.auditor {
		a.refused(ctx, s, "RunDetections", "", 403, "not in an auditor group")
		return nil, status.Error(codes.PermissionDenied, "running detections is for members of the auditor groups; ask your security team")
	}
	if a.detector == nil {
		return nil, status.Error(codes.Unimplemented, "this gateway has no detections configured")
	}
	to := timeOf(req.GetEndTime())
	if to.IsZero() {
		to = time.Now()
	}
	from := timeOf(req.GetStartTime())
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	if !from.Before(to) {
		return nil, status.Error(codes.InvalidArgument, "start_time must be before end_time")
	}
	names := req.GetNames()
	if len(names) == 0 {
		for _, d := range a.detector.Detections() {
			names = append(names, d.Name)
		}
	}
	resp := &kaccessv1.RunDetectionsResponse{}
	for _, name := range names {
		findings, err := a.detector.RunDetection(ctx, name, from, to)
		if errors.Is(err, ErrUnknownDetection) {
			return nil, status.Errorf(codes.InvalidArgument, "names: no detection %q; ListDetections shows the names", name)
		}
		if err != nil {
			return nil, a.queryError(ctx, "RunDetections", err)
		}
		for _, f := range findings {
			resp.Findings = append(resp.Findings, &kaccessv1.Finding{
				Detection: f.Detection, Severity: f.Severity, Summary: f.Summary, Subject: f.Subject, Cluster: f.Cluster,
				FirstSeenTime: timestamppb.New(f.FirstSeen), LastSeenTime: timestamppb.New(f.LastSeen),
				Count: f.Count, EvidenceEventIds: f.EventIDs,
			})
		}
	}
	if err := a.record(ctx, s, "RunDetections", from, to, "", int64(len(resp.Findings)), map[string]string{"detections": strings.Join(names, ",")}); err != nil {
		return nil, err
	}
	return resp, nil
}

// toAuditEvent is the API form of an event.
func toAuditEvent(e *event.Event) *kaccessv1.AuditEvent {
	out := &kaccessv1.AuditEvent{
		Time: timestamppb.New(e.Time), EventId: e.EventID, Kind: string(e.Kind), Stage: string(e.Stage),
		Cluster: e.Cluster, GatewayInstance: e.GatewayInstance, Seq: e.Seq, RequestId: e.RequestID,
		User: e.User, Uid: e.UID, Groups: e.Groups, Source: e.Source, SessionIdHash: e.SessionIDHash,
		ImpersonatedUser: e.ImpersonatedUser, ImpersonatedGroups: e.ImpersonatedGroups, GrantIds: e.GrantIDs,
		SourceIp: e.SourceIP, UserAgent: e.UserAgent, Verb: e.Verb, ApiGroup: e.APIGroup, ApiVersion: e.APIVersion,
		Resource: e.Resource, Subresource: e.Subresource, Namespace: e.Namespace, Name: e.Name,
		RequestUri: e.RequestURI, Method: e.Method, ResponseCode: int32(e.ResponseCode), Decision: string(e.Decision),
		RefusalReason: e.RefusalReason, BytesIn: e.BytesIn, BytesOut: e.BytesOut, Level: string(e.Level), Extra: e.Extra,
	}
	if e.Latency != 0 {
		out.Latency = durationpb.New(e.Latency)
	}
	if e.Duration != 0 {
		out.Duration = durationpb.New(e.Duration)
	}
	return out
}

// csvHeader are the columns of a CSV export: the fields people sort and pivot on.
var csvHeader = []string{
	"time", "event_id", "kind", "stage", "cluster", "user", "groups", "impersonated_user", "source_ip", "user_agent",
	"verb", "api_group", "resource", "subresource", "namespace", "name", "request_uri", "response_code", "decision",
	"refusal_reason", "latency_ms", "request_id",
}

func csvRecord(e *event.Event) []string {
	return []string{
		e.Time.UTC().Format(time.RFC3339Nano), e.EventID, string(e.Kind), string(e.Stage), e.Cluster, e.User,
		strings.Join(e.Groups, ";"), e.ImpersonatedUser, e.SourceIP, e.UserAgent, e.Verb, e.APIGroup, e.Resource,
		e.Subresource, e.Namespace, e.Name, e.RequestURI, strconv.Itoa(e.ResponseCode), string(e.Decision),
		e.RefusalReason, strconv.FormatFloat(float64(e.Latency)/float64(time.Millisecond), 'f', 3, 64), e.RequestID,
	}
}

// exportWriter turns events into JSON lines (kaccess' AuditEvent, or Kubernetes' audit.k8s.io/v1
// Event) or CSV and hands them on in chunks of about exportChunkBytes, so an export holds one
// chunk, never the whole file.
type exportWriter struct {
	contentType string
	buf         bytes.Buffer
	csv         *csv.Writer
	k8s         bool
	send        func(contentType string, data []byte) error
	json        protojson.MarshalOptions
	chunks      int // sent so far
}

func newExportWriter(f kaccessv1.ExportFormat, send func(string, []byte) error) *exportWriter {
	w := &exportWriter{contentType: "application/x-ndjson", send: send}
	switch f {
	case kaccessv1.ExportFormat_EXPORT_FORMAT_CSV:
		w.contentType = "text/csv; charset=utf-8"
		w.csv = csv.NewWriter(&w.buf)
		_ = w.csv.Write(csvHeader)
	case kaccessv1.ExportFormat_EXPORT_FORMAT_K8S:
		w.k8s = true
	}
	return w
}

func (w *exportWriter) write(e *event.Event) error {
	switch {
	case w.csv != nil:
		if err := w.csv.Write(csvRecord(e)); err != nil {
			return err
		}
		w.csv.Flush()
	case w.k8s:
		// Encode ends the line itself, as kube-apiserver's log backend does.
		if err := k8saudit.Encode(&w.buf, e); err != nil {
			return err
		}
	default:
		b, err := w.json.Marshal(toAuditEvent(e))
		if err != nil {
			return err
		}
		w.buf.Write(b)
		w.buf.WriteByte('\n')
	}
	if w.buf.Len() >= exportChunkBytes {
		return w.flush()
	}
	return nil
}

// flush sends what is buffered; an empty export still sends its header (CSV) or one empty
// chunk, so a REST client gets the content type.
//
// A chunk holds whole lines without the line break after its last one: grpc-gateway writes a
// "\n" after every message of a stream, HttpBody included, so over REST the chunks join into
// the file exactly. A gRPC client adds the same "\n" after each chunk.
func (w *exportWriter) flush() error {
	if w.buf.Len() == 0 && w.chunks > 0 {
		return nil
	}
	data := bytes.Clone(bytes.TrimSuffix(w.buf.Bytes(), []byte("\n")))
	w.buf.Reset()
	w.chunks++
	return w.send(w.contentType, data)
}
