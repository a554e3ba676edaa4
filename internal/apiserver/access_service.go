package apiserver

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/authn"
)

// AccessRequests is what AccessService needs of internal/access (an *access.Service). Every
// method takes the authenticated caller; nothing about who someone is comes from a request.
type AccessRequests interface {
	Create(ctx context.Context, caller access.Identity, in access.CreateInput) (*access.AccessRequest, error)
	Get(ctx context.Context, caller access.Identity, name string) (*access.AccessRequest, error)
	List(ctx context.Context, caller access.Identity, scope access.Scope) ([]*access.AccessRequest, error)
	Approve(ctx context.Context, caller access.Identity, name, comment string) (*access.AccessRequest, error)
	Deny(ctx context.Context, caller access.Identity, name, comment string) (*access.AccessRequest, error)
	Revoke(ctx context.Context, caller access.Identity, name, comment string) (*access.AccessRequest, error)
	Grants(ctx context.Context, caller access.Identity) ([]access.Grant, error)
}

// accessService implements kaccess.v1.AccessService over AccessRequests.
type accessService struct {
	kaccessv1.UnimplementedAccessServiceServer

	requests AccessRequests
	reviewer AccessReviewer // nil: ReviewAccess is unimplemented
	// queries authorizes and records ReviewAccess as AuditService does its queries.
	queries *auditService
	log     *slog.Logger
}

// caller is the authenticated identity, as internal/access takes it.
func caller(ctx context.Context) (access.Identity, error) {
	id, ok := authn.IdentityFrom(ctx)
	if !ok || id.User == "" {
		return access.Identity{}, status.Error(codes.Unauthenticated, authn.ErrNoCredential.Error())
	}
	addr := authn.ClientAddressFrom(ctx)
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	return access.Identity{User: id.User, UID: id.UID, Groups: append([]string(nil), id.Groups...), SourceIP: addr}, nil
}

// accessError maps internal/access's errors to gRPC codes; their messages say what was wrong
// and carry nothing from the cluster's internals (access logs those).
func (a *accessService) accessError(ctx context.Context, err error) error {
	var invalid *access.InvalidError
	switch {
	case errors.As(err, &invalid):
		var v violations
		for _, f := range invalid.Fields {
			v.add(f.Field, f.Problem)
		}
		return v.err()
	case errors.Is(err, access.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, access.ErrForbidden):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, access.ErrFinal):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, access.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	a.log.ErrorContext(ctx, "access request failed", "error", err.Error())
	return status.Error(codes.Internal, "the access request failed; the gateway's log has the details")
}

func validName(v *violations, name string) {
	switch {
	case name == "":
		v.add("name", "required")
	case len(validation.IsDNS1123Subdomain(name)) > 0:
		v.add("name", "not an access request name, such as db-admin-x7k2p")
	}
}

// CreateAccessRequest asks for an elevation as the caller.
func (a *accessService) CreateAccessRequest(ctx context.Context, req *kaccessv1.CreateAccessRequestRequest) (*kaccessv1.CreateAccessRequestResponse, error) {
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	switch d := req.GetDuration(); {
	case d == nil:
		v.add("duration", "required, such as 3600s")
	case d.CheckValid() != nil || d.AsDuration() <= 0:
		v.add("duration", "must be positive")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := a.requests.Create(ctx, who, access.CreateInput{
		Elevation: req.GetElevation(), Namespaces: req.GetNamespaces(), Duration: req.GetDuration().AsDuration(),
		Reason: req.GetReason(), Ticket: req.GetTicket(),
	})
	if err != nil {
		return nil, a.accessError(ctx, err)
	}
	return &kaccessv1.CreateAccessRequestResponse{AccessRequest: toProto(r)}, nil
}

// GetAccessRequest returns a request its requester or an approver may see.
func (a *accessService) GetAccessRequest(ctx context.Context, req *kaccessv1.GetAccessRequestRequest) (*kaccessv1.GetAccessRequestResponse, error) {
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	validName(&v, req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := a.requests.Get(ctx, who, req.GetName())
	if err != nil {
		return nil, a.accessError(ctx, err)
	}
	return &kaccessv1.GetAccessRequestResponse{AccessRequest: toProto(r)}, nil
}

// ListAccessRequests pages through the requests of a scope, newest first. The page token is
// the creation time and name of the last request of the previous page, so pages stay right
// while new requests arrive.
func (a *accessService) ListAccessRequests(ctx context.Context, req *kaccessv1.ListAccessRequestsRequest) (*kaccessv1.ListAccessRequestsResponse, error) {
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		v.add("page_size", "must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	var after *pageKey
	if tok := req.GetPageToken(); tok != "" {
		k, ok := decodePageKey(tok)
		if !ok {
			v.add("page_token", "not a token from an earlier ListAccessRequests response")
		}
		after = &k
	}
	scope := access.ScopeMine
	switch req.GetScope() {
	case kaccessv1.ListAccessRequestsRequest_SCOPE_UNSPECIFIED, kaccessv1.ListAccessRequestsRequest_SCOPE_MINE:
	case kaccessv1.ListAccessRequestsRequest_SCOPE_TO_REVIEW:
		scope = access.ScopeToReview
	case kaccessv1.ListAccessRequestsRequest_SCOPE_ALL:
		scope = access.ScopeAll
	case kaccessv1.ListAccessRequestsRequest_SCOPE_MINE_AND_TO_REVIEW:
		scope = access.ScopeMineAndToReview
	default:
		v.add("scope", "unknown scope")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	all, err := a.requests.List(ctx, who, scope)
	if err != nil {
		return nil, a.accessError(ctx, err)
	}
	resp := &kaccessv1.ListAccessRequestsResponse{}
	for _, r := range all {
		k := keyOf(r)
		if after != nil && !after.before(k) {
			continue
		}
		if len(resp.AccessRequests) == size {
			last := resp.AccessRequests[len(resp.AccessRequests)-1]
			resp.NextPageToken = pageKey{unix: last.GetCreateTime().GetSeconds(), name: last.GetName()}.encode()
			break
		}
		resp.AccessRequests = append(resp.AccessRequests, toProto(r))
	}
	return resp, nil
}

// pageKey orders requests as List returns them: newest first, then by name.
type pageKey struct {
	unix int64
	name string
}

func keyOf(r *access.AccessRequest) pageKey {
	return pageKey{unix: r.CreationTimestamp.Unix(), name: r.Name}
}

// before reports whether k comes before o in list order.
func (k pageKey) before(o pageKey) bool {
	if k.unix != o.unix {
		return k.unix > o.unix
	}
	return k.name < o.name
}

func (k pageKey) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.unix, 10) + "/" + k.name))
}

func decodePageKey(tok string) (pageKey, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return pageKey{}, false
	}
	ts, name, ok := strings.Cut(string(raw), "/")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return pageKey{}, false
	}
	return pageKey{unix: unix, name: name}, true
}

// ApproveAccessRequest approves as the caller.
func (a *accessService) ApproveAccessRequest(ctx context.Context, req *kaccessv1.ApproveAccessRequestRequest) (*kaccessv1.ApproveAccessRequestResponse, error) {
	r, err := a.decide(ctx, req.GetName(), req.GetComment(), a.requests.Approve)
	if err != nil {
		return nil, err
	}
	return &kaccessv1.ApproveAccessRequestResponse{AccessRequest: r}, nil
}

// DenyAccessRequest denies as the caller.
func (a *accessService) DenyAccessRequest(ctx context.Context, req *kaccessv1.DenyAccessRequestRequest) (*kaccessv1.DenyAccessRequestResponse, error) {
	r, err := a.decide(ctx, req.GetName(), req.GetComment(), a.requests.Deny)
	if err != nil {
		return nil, err
	}
	return &kaccessv1.DenyAccessRequestResponse{AccessRequest: r}, nil
}

// RevokeAccessRequest ends a request early as the caller.
func (a *accessService) RevokeAccessRequest(ctx context.Context, req *kaccessv1.RevokeAccessRequestRequest) (*kaccessv1.RevokeAccessRequestResponse, error) {
	r, err := a.decide(ctx, req.GetName(), req.GetComment(), a.requests.Revoke)
	if err != nil {
		return nil, err
	}
	return &kaccessv1.RevokeAccessRequestResponse{AccessRequest: r}, nil
}

func (a *accessService) decide(ctx context.Context, name, comment string,
	do func(context.Context, access.Identity, string, string) (*access.AccessRequest, error)) (*kaccessv1.AccessRequest, error) {
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	validName(&v, name)
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := do(ctx, who, name, comment)
	if err != nil {
		return nil, a.accessError(ctx, err)
	}
	return toProto(r), nil
}

// ListGrants lists the caller's grants in force.
func (a *accessService) ListGrants(ctx context.Context, _ *kaccessv1.ListGrantsRequest) (*kaccessv1.ListGrantsResponse, error) {
	who, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	grants, err := a.requests.Grants(ctx, who)
	if err != nil {
		return nil, a.accessError(ctx, err)
	}
	resp := &kaccessv1.ListGrantsResponse{}
	for _, g := range grants {
		resp.Grants = append(resp.Grants, &kaccessv1.Grant{
			AccessRequest: g.Request, Elevation: g.Elevation, Group: g.Group, Role: g.RoleRef.String(),
			Namespaces: g.Namespaces, ClusterWide: g.ClusterWide, ExpireTime: timestamppb.New(g.ExpiresAt),
		})
	}
	return resp, nil
}

var protoStates = map[access.State]kaccessv1.AccessRequestState{
	access.StatePending:  kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING,
	access.StateApproved: kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED,
	access.StateDenied:   kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_DENIED,
	access.StateExpired:  kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_EXPIRED,
	access.StateRevoked:  kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_REVOKED,
}

func toProto(r *access.AccessRequest) *kaccessv1.AccessRequest {
	ts := func(t *metav1.Time) *timestamppb.Timestamp {
		if t == nil || t.IsZero() {
			return nil
		}
		return timestamppb.New(t.Time)
	}
	reviews := func(rs []access.Review) []*kaccessv1.Review {
		var out []*kaccessv1.Review
		for _, rv := range rs {
			out = append(out, &kaccessv1.Review{Reviewer: rv.Reviewer, CreateTime: ts(&rv.Time), Comment: rv.Comment})
		}
		return out
	}
	state := protoStates[r.Status.State]
	if r.Status.State == "" {
		state = kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING // status not written yet
	}
	d, _ := time.ParseDuration(r.Spec.Duration)
	return &kaccessv1.AccessRequest{
		Name: r.Name, Elevation: r.Spec.Elevation, Namespaces: r.Spec.Namespaces, ClusterWide: r.Spec.ClusterWide,
		Role: r.Spec.RoleRef.String(), Duration: durationpb.New(d), Reason: r.Spec.Reason, Ticket: r.Spec.Ticket,
		Requester:         &kaccessv1.Identity{User: r.Spec.Requester.User, Uid: r.Spec.Requester.UID, Groups: r.Spec.Requester.Groups},
		State:             state,
		ApprovalsRequired: int32(r.Spec.ApprovalsRequired),
		Approvals:         reviews(r.Status.Approvals),
		Denials:           reviews(r.Status.Denials),
		CreateTime:        ts(&r.CreationTimestamp),
		PendingExpireTime: ts(r.Status.PendingUntil),
		ApproveTime:       ts(r.Status.ApprovedAt),
		ExpireTime:        ts(r.Status.ExpiresAt),
		RevokedBy:         r.Status.RevokedBy,
		EndTime:           ts(r.Status.EndedAt),
	}
}
