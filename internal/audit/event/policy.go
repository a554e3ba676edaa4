package event

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/audit/policy"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"sigs.k8s.io/yaml"

	"github.com/kaccess/kaccess/internal/authn"
)

// Level is how much of a request is recorded, with the values of audit.k8s.io/v1.
type Level string

// Levels, from least to most.
const (
	LevelNone            Level = "None"            // no event
	LevelMetadata        Level = "Metadata"        // who, what, when, outcome; no bodies
	LevelRequest         Level = "Request"         // and the (redacted) request body
	LevelRequestResponse Level = "RequestResponse" // and the (redacted) response body
)

// AtLeast reports whether l records at least as much as o. Unknown levels rank below None.
func (l Level) AtLeast(o Level) bool { return l.rank() >= o.rank() }

func (l Level) rank() int {
	switch l {
	case LevelNone:
		return 0
	case LevelMetadata:
		return 1
	case LevelRequest:
		return 2
	case LevelRequestResponse:
		return 3
	}
	return -1
}

// Policy decides the level of each request. It wraps an audit.k8s.io/v1 Policy evaluated by
// k8s.io/apiserver's own rule evaluator, so a policy file written for a kube-apiserver means the
// same here: the first matching rule wins, and a request no rule matches is at level None.
type Policy struct {
	eval audit.PolicyRuleEvaluator
}

// Rule is the outcome of evaluating a policy for one request.
type Rule struct {
	Level      Level
	omitStages []auditinternal.Stage
}

// Omits reports whether the matching rule (or the policy) lists the Kubernetes stage that
// corresponds to s in omitStages: StageStarted is ResponseStarted; StageComplete and StageEnded
// are ResponseComplete. RequestReceived and Panic have no kaccess counterpart and change nothing.
func (r Rule) Omits(s Stage) bool {
	k8s := auditinternal.StageResponseComplete
	if s == StageStarted {
		k8s = auditinternal.StageResponseStarted
	}
	return slices.Contains(r.omitStages, k8s)
}

// Evaluate returns the matching rule's level and omitted stages for attrs.
func (p *Policy) Evaluate(attrs authorizer.Attributes) Rule {
	c := p.eval.EvaluatePolicyRule(attrs)
	return Rule{Level: Level(c.Level), omitStages: c.OmitStages}
}

// LevelFor returns the level at which a request with attrs is recorded.
func (p *Policy) LevelFor(attrs authorizer.Attributes) Level { return p.Evaluate(attrs).Level }

// LoadPolicy parses an audit.k8s.io/v1 Policy from YAML or JSON. Unlike kube-apiserver, which
// falls back to lenient decoding with a warning, an unknown or duplicated field is an error: a
// misspelled "omitStage" or "namespace" must not silently widen or narrow what is recorded.
func LoadPolicy(data []byte) (*Policy, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("audit policy: empty document")
	}
	var strict auditv1.Policy
	if err := yaml.UnmarshalStrict(data, &strict); err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	if strict.APIVersion != auditv1.SchemeGroupVersion.String() || strict.Kind != "Policy" {
		return nil, fmt.Errorf("audit policy: want apiVersion %q and kind \"Policy\", got apiVersion %q kind %q",
			auditv1.SchemeGroupVersion.String(), strict.APIVersion, strict.Kind)
	}
	// Decoding, defaulting, conversion and validation (levels, stages, group names, URL
	// patterns) are k8s.io/apiserver's.
	p, err := policy.LoadPolicyFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	return &Policy{eval: policy.NewPolicyRuleEvaluator(p)}, nil
}

// LoadPolicyFile reads and parses a policy file; errors name the file.
func LoadPolicyFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	p, err := LoadPolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// DefaultPolicyYAML is the policy used when none is configured. Every request is recorded (no
// rule says None), bodies only where a security team needs them:
//
//   - secrets, configmaps, serviceaccounts/token (TokenRequest), tokenreviews: Metadata only.
//     Their bodies are credentials (configmaps often hold them too in practice); redaction
//     would catch Secret data and tokens anyway, but not a password in a ConfigMap, and
//     who-read-which-secret is fully answered at Metadata.
//   - RBAC objects and admission webhook configurations, when written: RequestResponse.
//     Privilege escalation detections (a binding to cluster-admin, wildcard roles, a new
//     mutating webhook) need the object, and the response shows what was stored.
//   - any other write (create, update, patch, delete, deletecollection): Request, so "what
//     did they change" has an answer (exec/attach commands are in the request URI).
//   - everything else (reads, watches, discovery, non-resource URLs): Metadata. Read responses
//     are the bulk of the volume and rarely needed; who read what is in the metadata.
const DefaultPolicyYAML = `apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "configmaps", "serviceaccounts/token"]
  - group: authentication.k8s.io
    resources: ["tokenreviews"]
- level: RequestResponse
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
  resources:
  - group: rbac.authorization.k8s.io
  - group: admissionregistration.k8s.io
- level: Request
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: Metadata
`

// DefaultPolicy returns the policy of DefaultPolicyYAML.
func DefaultPolicy() *Policy {
	p, err := LoadPolicy([]byte(DefaultPolicyYAML))
	if err != nil {
		panic("default audit policy: " + err.Error())
	}
	return p
}

// Attributes builds the authorizer attributes the policy is evaluated on, from the
// authenticated identity (before impersonation, as in kube-apiserver, so rules match the person
// and not whom they act as) and the parsed request. A nil identity is the anonymous user,
// system:anonymous in group system:unauthenticated, so policies can single out refused requests.
func Attributes(id *authn.Identity, info *genericrequest.RequestInfo) authorizer.Attributes {
	var rec authorizer.AttributesRecord
	if id != nil {
		rec.User = &user.DefaultInfo{Name: id.User, UID: id.UID, Groups: id.Groups, Extra: id.Extra}
	} else {
		rec.User = &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}
	}
	if info != nil {
		rec.Verb = info.Verb
		rec.Namespace, rec.Name = info.Namespace, info.Name
		rec.APIGroup, rec.APIVersion = info.APIGroup, info.APIVersion
		rec.Resource, rec.Subresource = info.Resource, info.Subresource
		rec.ResourceRequest = info.IsResourceRequest
		rec.Path = info.Path
	}
	return rec
}
