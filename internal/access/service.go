package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/clock"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// DefaultPendingTTL is how long a request waits for approvers unless configured otherwise.
const DefaultPendingTTL = 24 * time.Hour

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Client reads and writes AccessRequests; the gateway's identity needs the Role
	// kaccess-gateway-accessrequests (deploy/kubernetes/rbac.yaml).
	Client dynamic.Interface
	// Namespace holds the requests; default kaccess-system.
	Namespace string
	// Policy says what may be requested and by whom; SetPolicy replaces it.
	Policy *policy.Policy
	// Recorder gets an audit event for every change; a failure refuses the change, except a
	// revocation or expiry. Required: pass a discarding one explicitly in tests.
	Recorder Recorder
	// Clock is the time source; default the real clock.
	Clock clock.PassiveClock
	// PendingTTL is how long a request waits for a decision; default 24h.
	PendingTTL time.Duration
	// Clusters are the clusters behind the gateway: a request covers those its elevation
	// targets. Nil: requests cover the default cluster only.
	Clusters []policy.Cluster
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Service is what the API calls: every method takes the authenticated caller.
type Service struct {
	cfg   ServiceConfig
	store store
	log   *slog.Logger

	mu     sync.Mutex
	policy *policy.Policy
}

// NewService checks cfg and returns a Service.
func NewService(cfg ServiceConfig) (*Service, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("access: ServiceConfig.Client is required"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("access: ServiceConfig.Policy is required (load it with policy.Load)"))
	} else if err := cfg.Policy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("access: invalid policy: %w", err))
	}
	if cfg.Recorder == nil {
		errs = append(errs, errors.New("access: ServiceConfig.Recorder is required: every change is audited"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, store: store{cfg.Client, cfg.Namespace}, policy: cfg.Policy,
		log: cfg.Logger.With("component", "access")}, nil
}

// SetPolicy replaces the policy (a reloaded file). Pending requests are judged by the new one.
func (s *Service) SetPolicy(p *policy.Policy) error {
	if p == nil {
		return errors.New("access: nil policy")
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("access: invalid policy: %w", err)
	}
	s.mu.Lock()
	s.policy = p
	s.mu.Unlock()
	return nil
}

func (s *Service) currentPolicy() *policy.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

// requestName is "<elevation>-<5 random characters>": readable in kubectl, unique enough
// (a clash fails the create, and the caller tries again).
func requestName(elevation string) string {
	return elevation + "-" + utilrand.String(5)
}

// Create stores a new pending request of caller, once it is on the audit record.
func (s *Service) Create(ctx context.Context, caller Identity, in CreateInput) (*AccessRequest, error) {
	now := s.cfg.Clock.Now()
	pol := s.currentPolicy()
	r, err := NewRequest(pol, caller, in, requestName(in.Elevation), now, s.cfg.PendingTTL)
	if err != nil {
		return nil, err
	}
	r.Namespace = s.cfg.Namespace
	if s.cfg.Clusters != nil {
		e := elevation(pol, in.Elevation) // NewRequest found it
		r.Spec.Clusters = e.Target.Select(s.cfg.Clusters)
		if len(r.Spec.Clusters) == 0 {
			return nil, &InvalidError{Fields: []FieldError{{Field: "elevation",
				Problem: fmt.Sprintf("elevation %q targets no cluster behind this gateway; ask your administrator", in.Elevation)}}}
		}
	}
	t := Transition{Action: ActionCreated, Status: r.Status}
	if err := record(s.cfg.Recorder, events(r, t, caller, "", now)); err != nil {
		s.log.ErrorContext(ctx, "access request refused: audit record failed", "request", r.Name, "error", err)
		return nil, fmt.Errorf("%w: it could not be put on the audit record; try again later", ErrUnavailable)
	}
	out, err := s.store.create(ctx, r)
	if err != nil {
		s.log.ErrorContext(ctx, "access request not stored", "request", r.Name, "error", err)
		return nil, fmt.Errorf("%w: storing it failed; try again later", ErrUnavailable)
	}
	s.log.InfoContext(ctx, "access request created", "request", out.Name, "elevation", out.Spec.Elevation,
		"requester", caller.User, "duration", out.Spec.Duration)
	return out, nil
}

// visible reports whether caller may see r: its requester, or an approver of its elevation.
func visible(r *AccessRequest, p *policy.Policy, caller Identity) bool {
	if sameperson(caller, r.Spec.Requester.User, r.Spec.Requester.UID) {
		return true
	}
	e := elevation(p, r.Spec.Elevation)
	return e != nil && inAny(caller.Groups, e.Approvers)
}

// Get returns request name if caller may see it (ErrNotFound otherwise).
func (s *Service) Get(ctx context.Context, caller Identity, name string) (*AccessRequest, error) {
	r, err := s.store.get(ctx, name)
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	if !visible(r, s.currentPolicy(), caller) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return r, nil
}

// Scope selects what List returns.
type Scope int

// Scopes.
const (
	// ScopeMine: the caller's own requests.
	ScopeMine Scope = iota
	// ScopeToReview: pending requests the caller may approve and has not reviewed.
	ScopeToReview
	// ScopeAll: the caller's own and every request of an elevation the caller approves.
	ScopeAll
	// ScopeMineAndToReview: the caller's own, and the pending requests of others the caller
	// may approve and has not reviewed.
	ScopeMineAndToReview
)

// List returns the requests of scope, newest first.
func (s *Service) List(ctx context.Context, caller Identity, scope Scope) ([]*AccessRequest, error) {
	all, err := s.store.list(ctx)
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	p := s.currentPolicy()
	now := s.cfg.Clock.Now()
	var out []*AccessRequest
	for _, r := range all {
		mine := sameperson(caller, r.Spec.Requester.User, r.Spec.Requester.UID)
		var in bool
		switch scope {
		case ScopeMine:
			in = mine
		case ScopeToReview:
			in = s.toReview(r, p, caller, mine, now)
		case ScopeMineAndToReview:
			in = mine || s.toReview(r, p, caller, false, now)
		default:
			in = visible(r, p, caller)
		}
		if in {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *AccessRequest) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// toReview reports whether r waits for caller's review: pending, not due to expire, of an
// elevation caller approves, not reviewed by caller yet, and not caller's own (mine) unless
// the elevation allows self-approval.
func (s *Service) toReview(r *AccessRequest, p *policy.Policy, caller Identity, mine bool, now time.Time) bool {
	if _, due := Expire(r, now, s.cfg.PendingTTL); due {
		return false
	}
	e := elevation(p, r.Spec.Elevation)
	if e == nil || reviewable(r, e, caller, "approve") != nil {
		return false
	}
	return !mine || boolOr(e.AllowSelfApproval, false)
}

// Approve adds caller's approval to request name.
func (s *Service) Approve(ctx context.Context, caller Identity, name, comment string) (*AccessRequest, error) {
	return s.review(ctx, caller, name, comment, ActionApproved)
}

// Deny denies request name as caller.
func (s *Service) Deny(ctx context.Context, caller Identity, name, comment string) (*AccessRequest, error) {
	return s.review(ctx, caller, name, comment, ActionDenied)
}

// review approves or denies. Unlike Get, it tells a caller who may not review that they may
// not (PermissionDenied, naming the approver groups) rather than pretending the request does
// not exist: the names are random, and a refused approver needs to know why.
func (s *Service) review(ctx context.Context, caller Identity, name, comment string, action Action) (*AccessRequest, error) {
	p := s.currentPolicy()
	if _, err := s.expireIfDue(ctx, name); err != nil {
		return nil, err
	}
	var now time.Time
	var seen *AccessRequest
	out, t, err := s.store.change(ctx, name, func(r *AccessRequest) (Transition, error) {
		now, seen = s.cfg.Clock.Now(), r
		if _, due := Expire(r, now, s.cfg.PendingTTL); due {
			return Transition{}, fmt.Errorf("%w: %s expired before it was decided", ErrFinal, name)
		}
		e := elevation(p, r.Spec.Elevation)
		if action == ActionDenied {
			return Deny(r, e, caller, comment, now)
		}
		return Approve(r, e, caller, comment, now)
	}, func(r *AccessRequest, t Transition) error {
		if err := record(s.cfg.Recorder, events(r, t, caller, comment, now)); err != nil {
			s.log.ErrorContext(ctx, "access request review refused: audit record failed", "request", name, "error", err)
			return fmt.Errorf("%w: the review could not be put on the audit record; try again later", ErrUnavailable)
		}
		return nil
	})
	if err != nil {
		verb := "approve"
		if action == ActionDenied {
			verb = "deny"
		}
		s.recordRefused(ctx, seen, verb, caller, comment, err, now)
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "access request reviewed", "request", name, "action", string(t.Action),
		"reviewer", caller.User, "state", string(t.Status.State))
	return out, nil
}

// Revoke ends request name early, as caller. A revocation only takes access away, so it is
// made even when it cannot be put on the audit record (the failure is logged).
func (s *Service) Revoke(ctx context.Context, caller Identity, name, comment string) (*AccessRequest, error) {
	p := s.currentPolicy()
	if _, err := s.expireIfDue(ctx, name); err != nil {
		return nil, err
	}
	var now time.Time
	var seen *AccessRequest
	out, _, err := s.store.change(ctx, name, func(r *AccessRequest) (Transition, error) {
		now, seen = s.cfg.Clock.Now(), r
		return Revoke(r, elevation(p, r.Spec.Elevation), caller, now)
	}, func(r *AccessRequest, t Transition) error {
		if err := record(s.cfg.Recorder, events(r, t, caller, comment, now)); err != nil {
			s.log.ErrorContext(ctx, "access request revocation not recorded in the audit log", "request", name, "error", err)
		}
		return nil
	})
	if err != nil {
		s.recordRefused(ctx, seen, "revoke", caller, comment, err, now)
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "access request revoked", "request", name, "by", caller.User)
	return out, nil
}

// recordRefused puts a review or revocation refused with ErrForbidden on the audit record
// (other errors are not the caller's lack of rights). The caller is refused either way, so
// a failure to record it is only logged.
func (s *Service) recordRefused(ctx context.Context, r *AccessRequest, verb string, caller Identity, comment string, err error, now time.Time) {
	if r == nil || !errors.Is(err, ErrForbidden) {
		return
	}
	if rerr := s.cfg.Recorder.Record(refusedEvent(r, verb, caller, comment, err, now)); rerr != nil {
		s.log.ErrorContext(ctx, "refused access request "+verb+" not recorded in the audit log", "request", r.Name, "error", rerr)
	}
}

// expireIfDue marks request name expired if it is due, so a late review meets a final state.
func (s *Service) expireIfDue(ctx context.Context, name string) (bool, error) {
	expired, err := expireIfDue(ctx, s.store, s.cfg.Recorder, s.cfg.Clock, s.cfg.PendingTTL, s.log, name)
	if err != nil {
		return false, s.storeErr(ctx, err)
	}
	return expired, nil
}

// Grants returns caller's grants in force now, soonest to end first.
func (s *Service) Grants(ctx context.Context, caller Identity) ([]Grant, error) {
	mine, err := s.List(ctx, caller, ScopeMine)
	if err != nil {
		return nil, err
	}
	return activeGrants(mine, caller.User, s.cfg.Clock.Now()), nil
}

// storeErr passes the package's own errors through and turns API server failures into
// ErrUnavailable, with the detail in the log only.
func (s *Service) storeErr(ctx context.Context, err error) error {
	var invalid *InvalidError
	for _, known := range []error{ErrNotFound, ErrForbidden, ErrFinal, ErrUnavailable} {
		if errors.Is(err, known) {
			return err
		}
	}
	if errors.As(err, &invalid) {
		return err
	}
	s.log.ErrorContext(ctx, "access request store failed", "error", err)
	return fmt.Errorf("%w: the cluster could not be read or written; try again later", ErrUnavailable)
}
