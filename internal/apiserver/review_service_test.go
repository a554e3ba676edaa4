package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/rbacsync/policy/review"
)

type fakeReviewer struct {
	from, to time.Time
	err      error
}

func (f *fakeReviewer) ReviewAccess(_ context.Context, from, to time.Time) (*review.Report, error) {
	f.from, f.to = from, to
	if f.err != nil {
		return nil, f.err
	}
	return &review.Report{
		Bindings: []review.Binding{{Name: "devs", Role: "deploy", Users: []string{"alice"}, Requests: 3,
			Used: []review.Right{{Resource: "pods", Verb: "list"}}, Unused: []review.Right{{Resource: "pods", Verb: "delete"}}}},
		Diff: "--- policy (current)\n",
	}, nil
}

type recordedEvents struct {
	events []*event.Event
	err    error
}

func (r *recordedEvents) Record(e *event.Event) error {
	if r.err != nil {
		return r.err
	}
	r.events = append(r.events, e)
	return nil
}

func reviewService(rv AccessReviewer, rec Recorder) *accessService {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &accessService{reviewer: rv, log: log, queries: &auditService{auditors: []string{"corp:security"}, audit: rec, log: log}}
}

func asAuditor() context.Context {
	return authn.WithIdentity(context.Background(), &authn.Identity{User: "sam", Groups: []string{"corp:security"}})
}

func TestReviewAccessIsForAuditorsAndRecorded(t *testing.T) {
	t.Parallel()
	rv, rec := &fakeReviewer{}, &recordedEvents{}
	a := reviewService(rv, rec)
	if _, err := a.ReviewAccess(asAlice(), &kaccessv1.ReviewAccessRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("alice: %v, want PermissionDenied", err)
	}
	if len(rec.events) != 1 || rec.events[0].ResponseCode != 403 || rec.events[0].User != "alice" || rec.events[0].Extra["rpc"] != "ReviewAccess" {
		t.Fatalf("the refusal is not recorded as such: %+v", rec.events)
	}
	if !rv.to.IsZero() {
		t.Fatal("the review ran for a non-auditor")
	}
	resp, err := a.ReviewAccess(asAuditor(), &kaccessv1.ReviewAccessRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d := rv.to.Sub(rv.from); d != DefaultReviewWindow {
		t.Errorf("default window %s, want %s", d, DefaultReviewWindow)
	}
	b := resp.GetBindings()
	if len(b) != 1 || b[0].GetUnused()[0].GetVerb() != "delete" || b[0].GetRequests() != 3 || resp.GetPolicyDiff() == "" {
		t.Errorf("response %v", resp)
	}
	e := rec.events[1]
	if e.Kind != event.KindAuditQuery || e.User != "sam" || e.ResponseCode != 200 || e.Extra["scope"] != "all" || e.Extra["unused_rights"] != "1" || e.Extra["from"] == "" {
		t.Errorf("the review is not recorded as an audit query: %+v", e)
	}
}

func TestReviewAccessErrors(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name string
		req  *kaccessv1.ReviewAccessRequest
		rv   *fakeReviewer
		rec  *recordedEvents
		want codes.Code
	}{
		{"empty window", &kaccessv1.ReviewAccessRequest{StartTime: timestamppb.New(now), EndTime: timestamppb.New(now)}, &fakeReviewer{}, &recordedEvents{}, codes.InvalidArgument},
		{"too much to review", nil, &fakeReviewer{err: fmt.Errorf("%w: more than 3", query.ErrInvalid)}, &recordedEvents{}, codes.InvalidArgument},
		{"store down", nil, &fakeReviewer{err: errors.New("connection refused")}, &recordedEvents{}, codes.Unavailable},
		{"not recorded, not answered", nil, &fakeReviewer{}, &recordedEvents{err: errors.New("spool full")}, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reviewService(tc.rv, tc.rec).ReviewAccess(asAuditor(), tc.req)
			if status.Code(err) != tc.want {
				t.Errorf("%v, want %s", err, tc.want)
			}
		})
	}
	if _, err := reviewService(nil, &recordedEvents{}).ReviewAccess(asAuditor(), nil); status.Code(err) != codes.Unimplemented {
		t.Errorf("no reviewer: %v", err)
	}
}
