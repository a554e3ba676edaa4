package apiserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/authn"
)

// fakeRequests records who called and returns err, or requests.
type fakeRequests struct {
	err      error
	requests []*access.AccessRequest
	callers  []access.Identity
	inputs   []access.CreateInput
	scopes   []access.Scope
}

func (f *fakeRequests) one(who access.Identity, name string) (*access.AccessRequest, error) {
	f.callers = append(f.callers, who)
	if f.err != nil {
		return nil, f.err
	}
	return &access.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: access.Status{State: access.StateApproved}}, nil
}

func (f *fakeRequests) Create(_ context.Context, who access.Identity, in access.CreateInput) (*access.AccessRequest, error) {
	f.inputs = append(f.inputs, in)
	return f.one(who, in.Elevation+"-abcde")
}

func (f *fakeRequests) Get(_ context.Context, who access.Identity, name string) (*access.AccessRequest, error) {
	return f.one(who, name)
}

func (f *fakeRequests) List(_ context.Context, who access.Identity, scope access.Scope) ([]*access.AccessRequest, error) {
	f.callers, f.scopes = append(f.callers, who), append(f.scopes, scope)
	return f.requests, f.err
}

func (f *fakeRequests) Approve(_ context.Context, who access.Identity, name, _ string) (*access.AccessRequest, error) {
	return f.one(who, name)
}

func (f *fakeRequests) Deny(_ context.Context, who access.Identity, name, _ string) (*access.AccessRequest, error) {
	return f.one(who, name)
}

func (f *fakeRequests) Revoke(_ context.Context, who access.Identity, name, _ string) (*access.AccessRequest, error) {
	return f.one(who, name)
}

func (f *fakeRequests) Grants(_ context.Context, who access.Identity) ([]access.Grant, error) {
	f.callers = append(f.callers, who)
	return []access.Grant{{Request: "db-abcde", Group: access.GrantGroup("db-abcde"), ExpiresAt: time.Unix(1700000000, 0)}}, f.err
}

func asAlice() context.Context {
	return authn.WithIdentity(context.Background(), &authn.Identity{User: "alice", UID: "u1", Groups: []string{"corp:devs"}})
}

func newAccessService(f *fakeRequests) *accessService {
	return &accessService{requests: f, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestAccessServiceTakesTheCallerFromTheCredential(t *testing.T) {
	t.Parallel()
	f := &fakeRequests{}
	a := newAccessService(f)
	resp, err := a.CreateAccessRequest(asAlice(), &kaccessv1.CreateAccessRequestRequest{
		Elevation: "db", Duration: durationpb.New(time.Hour), Reason: "incident", Namespaces: []string{"team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAccessRequest().GetName() != "db-abcde" || resp.GetAccessRequest().GetState() != kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
		t.Errorf("response %v", resp)
	}
	if got := f.callers[0]; got.User != "alice" || got.UID != "u1" || !slices.Equal(got.Groups, []string{"corp:devs"}) {
		t.Errorf("caller %+v", got)
	}
	if in := f.inputs[0]; in.Duration != time.Hour || in.Reason != "incident" || in.Namespaces[0] != "team-a" {
		t.Errorf("input %+v", in)
	}
	if _, err := a.GetAccessRequest(context.Background(), &kaccessv1.GetAccessRequestRequest{Name: "db-abcde"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no identity: %v", err)
	}
	g, err := a.ListGrants(asAlice(), &kaccessv1.ListGrantsRequest{})
	if err != nil || len(g.GetGrants()) != 1 || g.GetGrants()[0].GetGroup() != "kaccess:grant:db-abcde" || g.GetGrants()[0].GetExpireTime().GetSeconds() != 1700000000 {
		t.Errorf("grants %v %v", g, err)
	}
}

func TestAccessServiceErrorCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("%w: x", access.ErrNotFound), codes.NotFound},
		{fmt.Errorf("%w: bob cannot approve their own request", access.ErrForbidden), codes.PermissionDenied},
		{fmt.Errorf("%w: denied, which is final", access.ErrFinal), codes.FailedPrecondition},
		{fmt.Errorf("%w: audit", access.ErrUnavailable), codes.Unavailable},
		{&access.InvalidError{Fields: []access.FieldError{{Field: "reason", Problem: "required"}}}, codes.InvalidArgument},
		{fmt.Errorf("etcd exploded at 10.0.0.3"), codes.Internal},
	}
	for _, tt := range tests {
		a := newAccessService(&fakeRequests{err: tt.err})
		_, err := a.ApproveAccessRequest(asAlice(), &kaccessv1.ApproveAccessRequestRequest{Name: "db-abcde"})
		st := status.Convert(err)
		if st.Code() != tt.code {
			t.Errorf("%v: code %v, want %v", tt.err, st.Code(), tt.code)
		}
		if tt.code == codes.Internal && st.Message() != "the access request failed; the gateway's log has the details" {
			t.Errorf("internal detail reached the client: %q", st.Message())
		}
		if tt.code == codes.InvalidArgument {
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if !slices.Equal(fields, []string{"reason"}) {
				t.Errorf("field violations %v", fields)
			}
		}
	}
	a := newAccessService(&fakeRequests{})
	for name, call := range map[string]func() error{
		"bad name": func() error {
			_, err := a.DenyAccessRequest(asAlice(), &kaccessv1.DenyAccessRequestRequest{Name: "Not/A/Name"})
			return err
		},
		"no name": func() error {
			_, err := a.RevokeAccessRequest(asAlice(), &kaccessv1.RevokeAccessRequestRequest{})
			return err
		},
		"no duration": func() error {
			_, err := a.CreateAccessRequest(asAlice(), &kaccessv1.CreateAccessRequestRequest{Elevation: "db"})
			return err
		},
		"negative page": func() error {
			_, err := a.ListAccessRequests(asAlice(), &kaccessv1.ListAccessRequestsRequest{PageSize: -1})
			return err
		},
		"garbage token": func() error {
			_, err := a.ListAccessRequests(asAlice(), &kaccessv1.ListAccessRequestsRequest{PageToken: "%%%"})
			return err
		},
		"negative duration": func() error {
			_, err := a.CreateAccessRequest(asAlice(), &kaccessv1.CreateAccessRequestRequest{Elevation: "db", Duration: durationpb.New(-time.Hour)})
			return err
		},
	} {
		if status.Code(call()) != codes.InvalidArgument {
			t.Errorf("%s: not InvalidArgument", name)
		}
	}
}

func TestListAccessRequestsPages(t *testing.T) {
	t.Parallel()
	// As access.Service.List returns them: newest first, then by name.
	var reqs []*access.AccessRequest
	for i, name := range []string{"e-5", "d-4", "c-3a", "c-3b", "a-1"} {
		ts := metav1.NewTime(time.Unix(int64(100-i), 0))
		if name == "c-3b" {
			ts = metav1.NewTime(time.Unix(97, 0)) // same second as c-3a
		}
		reqs = append(reqs, &access.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ts}})
	}
	f := &fakeRequests{requests: reqs}
	a := newAccessService(f)
	var got []string
	token := ""
	for range 10 {
		resp, err := a.ListAccessRequests(asAlice(), &kaccessv1.ListAccessRequestsRequest{
			Scope: kaccessv1.ListAccessRequestsRequest_SCOPE_TO_REVIEW, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetAccessRequests() {
			got = append(got, r.GetName())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := []string{"e-5", "d-4", "c-3a", "c-3b", "a-1"}; !slices.Equal(got, want) {
		t.Errorf("pages gave %v, want %v", got, want)
	}
	if f.scopes[0] != access.ScopeToReview {
		t.Errorf("scope %v", f.scopes[0])
	}
}
