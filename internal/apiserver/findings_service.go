package apiserver

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/event"
)

// Findings is what ListFindings and AcknowledgeFinding need: the stored findings of the
// scheduled detections (internal/audit/findings, through an adapter in the wiring).
type Findings interface {
	ListFindings(ctx context.Context, filter, state string, pageSize int, pageToken string) ([]StoredFinding, string, error)
	// AcknowledgeFinding marks a firing finding acknowledged; annotate completes the audit
	// event of the change (who, from where) before it is recorded.
	AcknowledgeFinding(ctx context.Context, id, actor, reason string, annotate func(*event.Event)) (StoredFinding, error)
}

// StoredFinding is a finding of a scheduled detection and its state.
type StoredFinding struct {
	ID, Detection, Cluster, Subject, Scope, Severity string
	TechniqueID, TechniqueName, Summary, State       string
	FirstSeen, LastSeen, Created, Updated, Resolved  time.Time
	Count                                            int64
	EventIDs                                         []string
	Reason, Actor                                    string
	Window                                           time.Duration
}

// Errors a Findings returns that callers are told apart by.
var (
	ErrFindingNotFound  = errors.New("no finding with this id")
	ErrFindingNotFiring = errors.New("the finding is not firing")
	// ErrChangeNotRecorded: the change's audit event could not be recorded, so it was not made.
	ErrChangeNotRecorded = errors.New("the change could not be recorded")
)

// maxAckReason bounds the reason of an acknowledgement: it goes into alerts and the record.
const maxAckReason = 1024

func (a *auditService) ListFindings(ctx context.Context, req *kaccessv1.ListFindingsRequest) (*kaccessv1.ListFindingsResponse, error) {
	s, err := a.scope(ctx)
	if err != nil {
		return nil, err
	}
	if !s.auditor {
		a.refused(ctx, s, "ListFindings", req.GetFilter(), 403, "not in an auditor group")
		return nil, status.Error(codes.PermissionDenied, "findings are for members of the auditor groups; ask your security team")
	}
	if a.findings == nil {
		return nil, status.Error(codes.Unimplemented, "this gateway keeps no findings")
	}
	fs, next, err := a.findings.ListFindings(ctx, req.GetFilter(), req.GetState(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, a.failed(ctx, s, "ListFindings", req.GetFilter(), err)
	}
	if err := a.record(ctx, s, "ListFindings", time.Time{}, time.Time{}, req.GetFilter(), int64(len(fs)), map[string]string{"state": req.GetState()}); err != nil {
		return nil, err
	}
	resp := &kaccessv1.ListFindingsResponse{NextPageToken: next}
	for _, f := range fs {
		resp.Findings = append(resp.Findings, toStoredFinding(f))
	}
	return resp, nil
}

// AcknowledgeFinding is for auditors only; the change is recorded with who and why before it
// is made.
func (a *auditService) AcknowledgeFinding(ctx context.Context, req *kaccessv1.AcknowledgeFindingRequest) (*kaccessv1.AcknowledgeFindingResponse, error) {
	s, err := a.scope(ctx)
	if err != nil {
		return nil, err
	}
	if !s.auditor {
		a.refused(ctx, s, "AcknowledgeFinding", "", 403, "not in an auditor group")
		return nil, status.Error(codes.PermissionDenied, "acknowledging findings is for members of the auditor groups; ask your security team")
	}
	if a.findings == nil {
		return nil, status.Error(codes.Unimplemented, "this gateway keeps no findings")
	}
	reason := strings.TrimSpace(req.GetReason())
	switch {
	case req.GetId() == "":
		return nil, status.Error(codes.InvalidArgument, "id: required (kaccess audit findings lists the ids)")
	case reason == "":
		return nil, status.Error(codes.InvalidArgument, "reason: required: say why the finding needs no further alert")
	case len(reason) > maxAckReason:
		return nil, status.Errorf(codes.InvalidArgument, "reason: at most %d bytes", maxAckReason)
	}
	f, err := a.findings.AcknowledgeFinding(ctx, req.GetId(), s.id.User, reason, func(e *event.Event) {
		src := stateEvent(ctx, event.KindFinding, "")
		e.SetIdentity(&s.id)
		e.SourceIP, e.Method = src.SourceIP, src.Method
	})
	switch {
	case errors.Is(err, ErrFindingNotFound):
		return nil, status.Errorf(codes.NotFound, "no finding %q", req.GetId())
	case errors.Is(err, ErrFindingNotFiring):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrChangeNotRecorded):
		a.log.ErrorContext(ctx, "finding acknowledgement not recorded", "finding", req.GetId(), "error", err.Error())
		return nil, status.Error(codes.Unavailable, "the acknowledgement could not be put on the audit record, so it was not made; try again later")
	case err != nil:
		return nil, a.queryError(ctx, "AcknowledgeFinding", err)
	}
	return &kaccessv1.AcknowledgeFindingResponse{Finding: toStoredFinding(f)}, nil
}

func toStoredFinding(f StoredFinding) *kaccessv1.StoredFinding {
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	return &kaccessv1.StoredFinding{
		Id: f.ID, Detection: f.Detection, Cluster: f.Cluster, Subject: f.Subject, Scope: f.Scope, Severity: f.Severity,
		MitreTechnique: f.TechniqueID, MitreTechniqueName: f.TechniqueName, Summary: f.Summary, State: f.State,
		FirstSeenTime: ts(f.FirstSeen), LastSeenTime: ts(f.LastSeen), Count: f.Count, EvidenceEventIds: f.EventIDs,
		CreateTime: ts(f.Created), UpdateTime: ts(f.Updated), ResolveTime: ts(f.Resolved),
		Reason: f.Reason, Actor: f.Actor, Window: durationpb.New(f.Window),
	}
}
