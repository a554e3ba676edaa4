package policy

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Guardrails are workload rules the API server enforces on its own, so they hold when the
// gateway is down: ValidatingAdmissionPolicies (images, resources), Pod Security Admission
// namespace labels (podSecurity) and NetworkPolicies (networkPolicies). Every guardrail has a
// name, unique across all four lists, that exemptions refer to.
type Guardrails struct {
	Images          []ImageGuardrail       `json:"images,omitempty"`
	Resources       []ResourceGuardrail    `json:"resources,omitempty"`
	HostAccess      []HostAccessGuardrail  `json:"hostAccess,omitempty"`
	CEL             []CELGuardrail         `json:"cel,omitempty"`
	PodSecurity     []PodSecurityGuardrail `json:"podSecurity,omitempty"`
	NetworkPolicies []NetworkGuardrail     `json:"networkPolicies,omitempty"`
	Exemptions      []Exemption            `json:"exemptions,omitempty"`
}

// Mode says what the API server does with an object that breaks a guardrail.
type Mode string

// Modes. For ValidatingAdmissionPolicies they are the binding's validationActions; for Pod
// Security they pick the namespace label (deny = enforce).
const (
	ModeWarn  Mode = "warn"  // the request passes; the client gets a warning
	ModeAudit Mode = "audit" // the request passes; the API server's audit log notes it
	ModeDeny  Mode = "deny"  // the request is refused
)

// Scope selects the namespaces a guardrail applies to: exactly one of Namespaces (by name) and
// NamespaceSelector (by labels; {} is every namespace).
type Scope struct {
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// ImageGuardrail allows container images only from the listed registries or repositories.
type ImageGuardrail struct {
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
	// Allowed are image prefixes as written in pod specs: one ending in "/" allows everything
	// under it ("registry.example.com/", "ghcr.io/acme/"); one without allows exactly that
	// repository with any tag or digest ("docker.io/library/nginx").
	Allowed []string `json:"allowed"`
	// RequireDigest refuses images not pinned by digest (…@sha256:…).
	RequireDigest bool `json:"requireDigest,omitempty"`
}

// ResourceGuardrail requires resource requests and limits on every container (init
// containers included), and may cap them per namespace.
type ResourceGuardrail struct {
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
	// Requests and Limits are the resources every container must set: "cpu" and/or "memory".
	// Default (both absent): cpu and memory for both; [] requires none.
	Requests []string `json:"requests,omitempty"`
	Limits   []string `json:"limits,omitempty"`
	// Maximums cap each container's requests and limits in the listed namespaces.
	Maximums []ResourceMaximum `json:"maximums,omitempty"`
}

// ResourceMaximum caps cpu and/or memory (Kubernetes quantities, "2", "500m", "4Gi") per
// container in Namespaces.
type ResourceMaximum struct {
	Namespaces []string `json:"namespaces"`
	CPU        string   `json:"cpu,omitempty"`
	Memory     string   `json:"memory,omitempty"`
}

// HostAccessGuardrail refuses, by CEL in a ValidatingAdmissionPolicy, privileged containers,
// hostPath volumes and the host's network, PID and IPC namespaces in Pods and in the pod
// templates of workloads. Unlike Pod Security Admission, which only warns about a workload's
// template, it refuses the Deployment (or Job, ...) itself, so kubectl apply fails instead
// of the controller's pods.
type HostAccessGuardrail struct {
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
}

// CELGuardrail is a rule of your own: a CEL expression that must be true for every Pod and
// workload template, in the language of ValidatingAdmissionPolicies. It sees object, request
// and the variables podSpec (the pod spec wherever the kind keeps it) and containers (init
// containers included), e.g. variables.containers.all(c, !c.image.endsWith(":latest")).
type CELGuardrail struct {
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target     `json:",inline"`
	Expression string `json:"expression"`
	// Message is what a refused request is told, after "guardrail <name>: ".
	Message string `json:"message"`
}

// Pod Security Standards levels.
const (
	LevelBaseline   = "baseline"
	LevelRestricted = "restricted"
)

// PodSecurityGuardrail labels the selected namespaces for Pod Security Admission
// (pod-security.kubernetes.io/<enforce|warn|audit>=<level>): baseline refuses privileged
// containers, hostPath volumes, hostNetwork/PID/IPC and added capabilities; restricted also
// requires non-root and dropped capabilities.
type PodSecurityGuardrail struct {
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Level string `json:"level"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
}

// NetworkGuardrail gives every selected namespace a default-deny ingress NetworkPolicy and
// one NetworkPolicy per allowed flow.
type NetworkGuardrail struct {
	Name  string `json:"name"`
	Scope `json:",inline"`
	// Target picks the clusters it applies to; none set: every cluster.
	Target `json:",inline"`
	Allow  []Flow `json:"allow,omitempty"`
}

// Flow lets traffic from peers reach the pods PodSelector selects (nil: every pod of the
// namespace), on Ports (none: every port).
type Flow struct {
	Name        string                `json:"name"`
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	From        []Peer                `json:"from"`
	Ports       []Port                `json:"ports,omitempty"`
}

// Peer is a NetworkPolicy peer: pods matching PodSelector in namespaces matching
// NamespaceSelector (either may be omitted; at least one is required).
type Peer struct {
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// Port is a NetworkPolicy port; Protocol defaults to TCP.
type Port struct {
	Protocol string             `json:"protocol,omitempty"`
	Port     intstr.IntOrString `json:"port"`
}

// Exemption lets one target through guardrails until it expires: a namespace, a workload by
// name (in Namespace, or in any namespace), or both. It is dropped from the rendered objects
// once Expires has passed.
type Exemption struct {
	// Guardrails name the guardrails it exempts from (images, resources, hostAccess, cel or
	// podSecurity ones).
	Guardrails []string `json:"guardrails"`
	Namespace  string   `json:"namespace,omitempty"`
	// Workload is an object name: the Deployment, StatefulSet, ... itself, the objects it owns
	// directly, and the Pods of its ReplicaSets or Jobs. Not valid for podSecurity guardrails,
	// which act on whole namespaces.
	Workload string `json:"workload,omitempty"`
	Reason   string `json:"reason"`
	// Expires is an RFC 3339 time, required: an exemption never lasts forever.
	Expires string `json:"expires"`
}

// ExpiresAt returns the parsed expiry of a validated exemption.
func (e Exemption) ExpiresAt() time.Time {
	t, _ := time.Parse(time.RFC3339, e.Expires)
	return t
}
