package apiserver

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	rbacv1 "k8s.io/api/rbac/v1"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/rbacsync/policy/review"
)

// AccessReviewer compares the access policy with what the audit record shows was used
// (ReviewAccess): internal/rbacsync/policy/review over the audit store's usage summary, wired
// in the gateway. Errors wrapping query.ErrInvalid are the caller's (window too long, too much
// to summarize); others are the store's.
type AccessReviewer interface {
	ReviewAccess(ctx context.Context, from, to time.Time) (*review.Report, error)
}

// DefaultReviewWindow is the window of a review that names no start.
const DefaultReviewWindow = 30 * 24 * time.Hour

// ReviewAccess is for auditors only, like RunDetections: the review reads everyone's events and
// names who used what. It is recorded as an audit query before it is answered.
func (a *accessService) ReviewAccess(ctx context.Context, req *kaccessv1.ReviewAccessRequest) (*kaccessv1.ReviewAccessResponse, error) {
	q := a.queries
	s, err := q.scope(ctx)
	if err != nil {
		return nil, err
	}
	if !s.auditor {
		q.refused(ctx, s, "ReviewAccess", "", 403, "not in an auditor group")
		return nil, status.Error(codes.PermissionDenied, "access reviews are for members of the auditor groups; ask your security team")
	}
	if a.reviewer == nil {
		return nil, status.Error(codes.Unimplemented, "this gateway has no access policy or audit store to review")
	}
	to := timeOf(req.GetEndTime())
	if to.IsZero() {
		to = time.Now()
	}
	from := timeOf(req.GetStartTime())
	if from.IsZero() {
		from = to.Add(-DefaultReviewWindow)
	}
	if !from.Before(to) {
		return nil, status.Error(codes.InvalidArgument, "start_time must be before end_time")
	}
	rep, err := a.reviewer.ReviewAccess(ctx, from, to)
	if err != nil {
		return nil, q.failed(ctx, s, "ReviewAccess", "", err)
	}
	var unused int
	for _, b := range rep.Bindings {
		unused += len(b.Unused)
	}
	if err := q.record(ctx, s, "ReviewAccess", from, to, "", int64(len(rep.Bindings)),
		map[string]string{"unused_rights": strconv.Itoa(unused)}); err != nil {
		return nil, err
	}
	return toReviewProto(rep, from, to), nil
}

func toReviewProto(rep *review.Report, from, to time.Time) *kaccessv1.ReviewAccessResponse {
	rights := func(rs []review.Right) []*kaccessv1.AccessRight {
		out := make([]*kaccessv1.AccessRight, len(rs))
		for i, r := range rs {
			out[i] = &kaccessv1.AccessRight{ApiGroup: r.APIGroup, Resource: r.Resource, Verb: r.Verb}
		}
		return out
	}
	rules := func(rs []rbacv1.PolicyRule) []*kaccessv1.PolicyRule {
		out := make([]*kaccessv1.PolicyRule, len(rs))
		for i, r := range rs {
			out[i] = &kaccessv1.PolicyRule{ApiGroups: r.APIGroups, Resources: r.Resources, Verbs: r.Verbs,
				ResourceNames: r.ResourceNames, NonResourceUrls: r.NonResourceURLs}
		}
		return out
	}
	resp := &kaccessv1.ReviewAccessResponse{
		StartTime: timestamppb.New(from), EndTime: timestamppb.New(to),
		ProposedPolicy: rep.ProposedYAML, PolicyDiff: rep.Diff,
	}
	for _, b := range rep.Bindings {
		pb := &kaccessv1.BindingReview{
			Name: b.Name, Role: b.Role, Groups: b.Groups, Scope: b.Scope, Users: b.Users, Requests: b.Requests,
			Used: rights(b.Used), Unused: rights(b.Unused), Remove: b.Remove, Skipped: b.Skipped,
		}
		for _, w := range b.Wildcards {
			pb.Wildcards = append(pb.Wildcards, &kaccessv1.WildcardUse{Rule: int32(w.Rule), Field: w.Field, Seen: w.Seen})
		}
		resp.Bindings = append(resp.Bindings, pb)
	}
	for _, e := range rep.Elevations {
		pe := &kaccessv1.ElevationReview{
			Name: e.Name, Role: e.Role, Scope: e.Scope, Grants: e.Grants, Users: e.Users, Requests: e.Requests,
			Used: rights(e.Used), Unused: rights(e.Unused), Skipped: e.Skipped,
		}
		for _, w := range e.Wildcards {
			pe.Wildcards = append(pe.Wildcards, &kaccessv1.WildcardUse{Rule: int32(w.Rule), Field: w.Field, Seen: w.Seen})
		}
		resp.Elevations = append(resp.Elevations, pe)
	}
	for _, r := range rep.Roles {
		resp.Roles = append(resp.Roles, &kaccessv1.RoleReview{Name: r.Name, Rules: rules(r.Rules), Proposed: rules(r.Proposed), Remove: r.Remove, Kept: r.Kept})
	}
	return resp
}
