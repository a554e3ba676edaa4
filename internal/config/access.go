package config

import (
	"time"
)

// Access configures least privilege as code: the access policy kaccess keeps the default
// cluster's RBAC in line with, and the elevations people may request.
type Access struct {
	// PolicyFile is the access policy (kaccess.io/v1alpha1 AccessPolicy). Empty turns RBAC
	// sync and access requests off.
	PolicyFile string `json:"policyFile"`
	// Namespace is the gateway's own namespace: AccessRequests and the leader Lease live
	// there. Default kaccess-system.
	Namespace string `json:"namespace"`
	// PendingTTL is how long a request waits for a decision before it expires. Default 24h.
	PendingTTL Duration `json:"pendingTTL"`
}

func (a *Access) setDefaults() {
	setString(&a.Namespace, "kaccess-system")
	setDuration(&a.PendingTTL, 24*time.Hour)
}

func (a *Access) validate(p *problems) {
	if !clusterName.MatchString(a.Namespace) {
		p.add("access.namespace", "must be a namespace name such as kaccess-system, got %q", a.Namespace)
	}
	if d := a.PendingTTL.D(); d < time.Minute || d > 30*24*time.Hour {
		p.add("access.pendingTTL", "must be between 1m and 720h, got %s", d)
	}
}
