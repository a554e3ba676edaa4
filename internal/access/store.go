package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
)

// store reads and writes AccessRequests in one namespace through the dynamic client.
type store struct {
	client    dynamic.Interface
	namespace string
}

func (s store) api() dynamic.ResourceInterface {
	return s.client.Resource(GVR).Namespace(s.namespace)
}

func (s store) get(ctx context.Context, name string) (*AccessRequest, error) {
	u, err := s.api().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get access request %s: %w", name, err)
	}
	return FromUnstructured(u)
}

func (s store) list(ctx context.Context) ([]*AccessRequest, error) {
	l, err := s.api().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list access requests in %s: %w", s.namespace, err)
	}
	out := make([]*AccessRequest, 0, len(l.Items))
	for i := range l.Items {
		r, err := FromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// create stores r and then its status (the API server ignores status on create, since the
// CRD has a status subresource). If the status write fails, the request stays with an empty
// status, which reads as pending until creation + the pending TTL: nothing is granted.
func (s store) create(ctx context.Context, r *AccessRequest) (*AccessRequest, error) {
	r.Namespace = s.namespace
	u, err := ToUnstructured(r)
	if err != nil {
		return nil, err
	}
	created, err := s.api().Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create access request: %w", err)
	}
	out, err := FromUnstructured(created)
	if err != nil {
		return nil, err
	}
	out.Status = r.Status
	return s.updateStatus(ctx, out)
}

// updateStatus writes r's status, if r's resourceVersion is still current (a conflict
// error otherwise: the caller re-reads and decides again).
func (s store) updateStatus(ctx context.Context, r *AccessRequest) (*AccessRequest, error) {
	u, err := ToUnstructured(r)
	if err != nil {
		return nil, err
	}
	updated, err := s.api().UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return FromUnstructured(updated)
}

// errNoChange stops a change that turned out to be unnecessary on a fresh read.
var errNoChange = errors.New("no change")

// change reads request name, lets decide compute a transition from the fresh copy, and writes
// the new status with the copy's resourceVersion; on a conflict (someone else wrote first) it
// starts over from a fresh read. before runs after decide and before the write (the audit
// record); if it fails nothing is written. After a conflict decide and before run again, so a
// change may be recorded twice (never not at all); conflicts are rare, requests small.
func (s store) change(ctx context.Context, name string,
	decide func(r *AccessRequest) (Transition, error),
	before func(r *AccessRequest, t Transition) error,
) (*AccessRequest, Transition, error) {
	var out *AccessRequest
	var done Transition
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := s.get(ctx, name)
		if err != nil {
			return err
		}
		t, err := decide(r)
		if err != nil {
			return err
		}
		if err := before(r, t); err != nil {
			return err
		}
		r.Status = t.Status
		updated, err := s.updateStatus(ctx, r)
		if err != nil {
			return err
		}
		out, done = updated, t
		return nil
	})
	if err != nil {
		return nil, Transition{}, err
	}
	return out, done, nil
}

// expireIfDue marks request name expired (decided on a fresh read) if it is due at clk's now,
// and reports whether it did. The expiry only takes access away, so it stands even if it
// cannot be recorded (the failure is logged). The Service and the controller both call it:
// whichever comes first writes, the other finds nothing due.
func expireIfDue(ctx context.Context, s store, rec Recorder, clk clock.PassiveClock, ttl time.Duration,
	log *slog.Logger, name string) (bool, error) {
	_, t, err := s.change(ctx, name, func(r *AccessRequest) (Transition, error) {
		t, due := Expire(r, clk.Now(), ttl)
		if !due {
			return Transition{}, errNoChange
		}
		return t, nil
	}, func(r *AccessRequest, t Transition) error {
		if err := record(rec, events(r, t, Identity{}, "", clk.Now())); err != nil {
			log.ErrorContext(ctx, "access request expiry not recorded in the audit log", "request", name, "error", err)
		}
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return false, nil
	case err != nil:
		return false, err
	}
	log.InfoContext(ctx, "access request expired", "request", name, "grant_ended", t.GrantEnded)
	return true, nil
}
