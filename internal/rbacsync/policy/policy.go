// Package policy reads kaccess's access policy file (curated roles, group bindings and the
// elevations that may be requested), validates it, computes the exact RBAC objects kaccess must
// own for a list of namespaces, checks roles for escalation paths and diffs desired against
// current objects for `kaccess policy plan`. It is pure logic: no client, no clock.
package policy

import (
	"errors"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/yamldoc"
)

// The file's type.
const (
	APIVersion = "kaccess.io/v1alpha1"
	Kind       = "AccessPolicy"
)

// Defaults.
const (
	DefaultApprovals = 1
	// MaxElevationDuration bounds every elevation's maxDuration.
	MaxElevationDuration = "24h"
)

// Role kinds a role reference may name.
const (
	RefKindClusterRole = "ClusterRole"
	RefKindRole        = "Role"
)

// Policy is one access policy file.
type Policy struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Roles      []Role      `json:"roles,omitempty"`
	Bindings   []Binding   `json:"bindings,omitempty"`
	Elevations []Elevation `json:"elevations,omitempty"`
	// Guardrails are workload rules the API server enforces itself (guardrails.go).
	Guardrails *Guardrails `json:"guardrails,omitempty"`
}

// Role is either a curated role kaccess owns (Rules; it becomes the ClusterRole
// "kaccess:<name>", bound cluster-wide or per namespace) or a reference to an existing role
// (Ref), never both.
type Role struct {
	// Name is how bindings and elevations refer to the role: a DNS-1123 label.
	Name  string              `json:"name"`
	Rules []rbacv1.PolicyRule `json:"rules,omitempty"`
	Ref   *RoleRef            `json:"ref,omitempty"`
}

// RoleRef names a role kaccess does not own. A Role must exist in every namespace it is bound
// in, and cannot be bound cluster-wide.
type RoleRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Binding gives directory groups a role, in exactly one scope: listed namespaces, namespaces
// matching a label selector, or cluster-wide.
type Binding struct {
	// Name is a DNS-1123 label; it is part of the generated object names.
	Name string `json:"name"`
	// Groups are directory groups as the gateway impersonates them ("corp:k8s-devs").
	Groups            []string              `json:"groups"`
	Role              string                `json:"role"`
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	ClusterWide       bool                  `json:"clusterWide,omitempty"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
}

// Elevation is a role that members of Requesters may ask for, for at most MaxDuration, in
// Namespaces or cluster-wide, once Approvals members of Approvers said yes.
type Elevation struct {
	Name        string   `json:"name"`
	Role        string   `json:"role"`
	Namespaces  []string `json:"namespaces,omitempty"`
	ClusterWide bool     `json:"clusterWide,omitempty"`
	Requesters  []string `json:"requesters"`
	Approvers   []string `json:"approvers"`
	// Approvals is how many distinct approvers must approve; default 1.
	Approvals *int `json:"approvals,omitempty"`
	// MaxDuration is the longest grant, in Go notation ("4h"); required, at most 24h.
	MaxDuration string `json:"maxDuration"`
	// ReasonRequired defaults to true.
	ReasonRequired *bool `json:"reasonRequired,omitempty"`
	// AllowSelfApproval defaults to false.
	AllowSelfApproval *bool `json:"allowSelfApproval,omitempty"`
	// Target picks the clusters a grant covers: a request is granted on every targeted
	// cluster behind the gateway (none set: every cluster).
	Target `json:",inline"`
}

// Load decodes a policy strictly (unknown, duplicate or wrongly cased fields are errors), fills
// in defaults and validates it, returning every problem at once.
func Load(data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("decode access policy: %d bytes exceeds the limit of %d", len(data), MaxFileSize)
	}
	if err := yamldoc.Single(data, "policy"); err != nil {
		return nil, fmt.Errorf("decode access policy: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("decode access policy: %w", err)
	}
	var p Policy
	// encoding/json (behind yaml.UnmarshalStrict) matches field names case-insensitively, so
	// "clusterwide" would pass silently; this decoder is the one the API server uses.
	strictErrs, err := kjson.UnmarshalStrict(j, &p, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("decode access policy: %w", err)
	}
	if len(strictErrs) > 0 {
		return nil, fmt.Errorf("decode access policy: %w", errors.Join(strictErrs...))
	}
	p.SetDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// MaxFileSize bounds a policy file; one for thousands of bindings is a few hundred KB.
const MaxFileSize = 4 << 20

// SetDefaults fills in what was left empty.
func (p *Policy) SetDefaults() {
	for i := range p.Elevations {
		e := &p.Elevations[i]
		if e.Approvals == nil {
			e.Approvals = ptr(DefaultApprovals)
		}
		if e.ReasonRequired == nil {
			e.ReasonRequired = ptr(true)
		}
		if e.AllowSelfApproval == nil {
			e.AllowSelfApproval = ptr(false)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// role returns the role named name, or nil.
func (p *Policy) role(name string) *Role {
	for i := range p.Roles {
		if p.Roles[i].Name == name {
			return &p.Roles[i]
		}
	}
	return nil
}
