// Package access keeps requests for temporary elevation as AccessRequest custom resources
// (kaccess.io/v1alpha1) in the gateway's namespace, so every replica and kubectl see the same
// state. It holds the request's state machine (pure, with an injected clock), the Service the
// API calls, the grant controller that binds an approved elevation's role to a per-grant group
// and unbinds it at expiry, and the Grants cache with which the gateway adds that group to a
// user's impersonated groups only while the grant is in force.
package access

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The custom resource.
const (
	Group      = "kaccess.io"
	Version    = "v1alpha1"
	Kind       = "AccessRequest"
	Resource   = "accessrequests"
	APIVersion = Group + "/" + Version
	// DefaultNamespace is where the gateway keeps requests unless configured otherwise.
	DefaultNamespace = "kaccess-system"
)

// GVR is the resource the dynamic client reads and writes.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Labels on requests and grant bindings.
const (
	// ElevationLabel on a request names its elevation, for kubectl -l.
	ElevationLabel = "kaccess.io/elevation"
	// GrantLabel on a binding names the request it grants. Grant bindings do not carry
	// kaccess.io/policy-role, so rbacsync never prunes them; only the grant controller does.
	GrantLabel = "kaccess.io/grant"
	// GrantGroupPrefix starts the per-grant group: "kaccess:grant:<request name>".
	GrantGroupPrefix = "kaccess:grant:"
)

// GrantGroup is the group that holds the grant of request name, and the name of its bindings.
func GrantGroup(name string) string { return GrantGroupPrefix + name }

// State is where a request is in its life.
type State string

// States. Denied, Expired and Revoked are final.
const (
	StatePending  State = "pending"
	StateApproved State = "approved"
	StateDenied   State = "denied"
	StateExpired  State = "expired"
	StateRevoked  State = "revoked"
)

// Final reports whether nothing can change s any more.
func (s State) Final() bool { return s == StateDenied || s == StateExpired || s == StateRevoked }

// AccessRequest is the custom resource.
type AccessRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec   `json:"spec"`
	Status            Status `json:"status,omitempty"`
}

// Spec is what was asked, fixed at creation (the CRD refuses changes). Who asked comes from
// the authenticated caller; the role and scope are copied from the policy at creation, so a
// grant binds what the approvers saw even if the policy changes meanwhile.
type Spec struct {
	Requester  Requester `json:"requester"`
	Elevation  string    `json:"elevation"`
	Namespaces []string  `json:"namespaces,omitempty"`
	// ClusterWide grants through a ClusterRoleBinding instead of RoleBindings.
	ClusterWide bool `json:"clusterWide,omitempty"`
	// Clusters are the clusters behind the gateway the grant covers: those the elevation
	// targets when the request was made. Empty (requests made before clusters could be
	// targeted): the default cluster only.
	Clusters []string `json:"clusters,omitempty"`
	RoleRef  RoleRef  `json:"roleRef"`
	// Duration is how long the grant lasts once approved, in Go notation ("1h").
	Duration string `json:"duration"`
	Reason   string `json:"reason,omitempty"`
	Ticket   string `json:"ticket,omitempty"`
	// ApprovalsRequired is the elevation's number of distinct approvals, fixed at creation.
	ApprovalsRequired int `json:"approvalsRequired"`
}

// Requester is the authenticated identity that asked.
type Requester struct {
	User   string   `json:"user"`
	UID    string   `json:"uid,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// RoleRef is the role a grant binds: a ClusterRole, or a Role in each namespace.
type RoleRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (r RoleRef) String() string { return r.Kind + " " + r.Name }

// Status is the decision and the grant's times.
type Status struct {
	State     State    `json:"state,omitempty"`
	Approvals []Review `json:"approvals,omitempty"`
	Denials   []Review `json:"denials,omitempty"`
	// PendingUntil ends a request nobody decided on.
	PendingUntil *metav1.Time `json:"pendingUntil,omitempty"`
	ApprovedAt   *metav1.Time `json:"approvedAt,omitempty"`
	// ExpiresAt is absolute UTC, fixed at approval: ApprovedAt + Spec.Duration.
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	RevokedBy string       `json:"revokedBy,omitempty"`
	// EndedAt is when it was denied, revoked or expired.
	EndedAt *metav1.Time `json:"endedAt,omitempty"`
}

// Review is one reviewer's vote.
type Review struct {
	Reviewer string      `json:"reviewer"`
	UID      string      `json:"uid,omitempty"`
	Time     metav1.Time `json:"time"`
	Comment  string      `json:"comment,omitempty"`
}

// DurationValue is Spec.Duration parsed; 0 if it does not parse (validated at creation).
func (r *AccessRequest) DurationValue() time.Duration {
	d, _ := time.ParseDuration(r.Spec.Duration)
	return d
}

// effectiveState is the stored state, pending when the status was never written (the API
// server drops status on create; Service.Create writes it right after).
func (r *AccessRequest) effectiveState() State {
	if r.Status.State == "" {
		return StatePending
	}
	return r.Status.State
}

// pendingUntil is Status.PendingUntil or, if the status was never written, the creation time
// plus ttl.
func (r *AccessRequest) pendingUntil(ttl time.Duration) time.Time {
	if r.Status.PendingUntil != nil {
		return r.Status.PendingUntil.Time
	}
	return r.CreationTimestamp.Add(ttl)
}

// ActiveAt reports whether the request grants access at now: approved, and now before
// ExpiresAt.
func (r *AccessRequest) ActiveAt(now time.Time) bool {
	return r.Status.State == StateApproved && r.Status.ExpiresAt != nil && now.Before(r.Status.ExpiresAt.Time)
}

// FromUnstructured converts what the dynamic client returns.
func FromUnstructured(u *unstructured.Unstructured) (*AccessRequest, error) {
	var r AccessRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
		return nil, fmt.Errorf("decode AccessRequest %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &r, nil
}

// ToUnstructured converts for the dynamic client.
func ToUnstructured(r *AccessRequest) (*unstructured.Unstructured, error) {
	r.APIVersion, r.Kind = APIVersion, Kind
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r)
	if err != nil {
		return nil, fmt.Errorf("encode AccessRequest %s: %w", r.Name, err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// clone copies s deeply enough that changing the copy leaves s alone.
func (s Status) clone() Status {
	out := s
	out.Approvals = append([]Review(nil), s.Approvals...)
	out.Denials = append([]Review(nil), s.Denials...)
	return out
}
