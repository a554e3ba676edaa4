package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/kaccess/kaccess/internal/authn"
)

// ImpersonationChecker decides whether actor may impersonate as req asks (kubectl --as).
// It returns a refusal message in kube-apiserver's words when not.
type ImpersonationChecker interface {
	CheckImpersonation(ctx context.Context, actor *authn.Identity, req *ImpersonationRequest) (allowed bool, refusal string, err error)
}

// SARChecker asks the API server, with a SubjectAccessReview per requested attribute, exactly as
// kube-apiserver's own impersonation filter would for the actor. Decisions are cached briefly:
// kubectl sends the same --as on every request of a command.
type SARChecker struct {
	reviews authorizationclient.SubjectAccessReviewInterface
	ttl     time.Duration
	now     func() time.Time

	mu    sync.Mutex
	cache map[string]sarDecision
}

type sarDecision struct {
	allowed bool
	at      time.Time
}

// NewSARChecker returns a checker using reviews; decisions are kept for ttl (0 = no cache).
func NewSARChecker(reviews authorizationclient.SubjectAccessReviewInterface, ttl time.Duration) *SARChecker {
	return &SARChecker{reviews: reviews, ttl: ttl, now: time.Now, cache: map[string]sarDecision{}}
}

// impersonationAttr is one thing to impersonate, in the authorization attributes
// kube-apiserver's impersonation filter uses.
type impersonationAttr struct {
	namespace, group, resource, subresource, name string
}

func (a impersonationAttr) refusal(actor string) string {
	res := a.resource
	if a.subresource != "" {
		res += "/" + a.subresource
	}
	scope := "at the cluster scope"
	if a.namespace != "" {
		scope = fmt.Sprintf("in the namespace %q", a.namespace)
	}
	return fmt.Sprintf("%s %q is forbidden: User %q cannot impersonate resource %q in API group %q %s",
		res, a.name, actor, res, a.group, scope)
}

func attrsFor(req *ImpersonationRequest) []impersonationAttr {
	var attrs []impersonationAttr
	if ns, name, err := serviceaccount.SplitUsername(req.User); err == nil {
		attrs = append(attrs, impersonationAttr{namespace: ns, resource: "serviceaccounts", name: name})
	} else {
		attrs = append(attrs, impersonationAttr{resource: "users", name: req.User})
	}
	for _, g := range req.Groups {
		attrs = append(attrs, impersonationAttr{resource: "groups", name: g})
	}
	if req.UID != "" {
		attrs = append(attrs, impersonationAttr{group: "authentication.k8s.io", resource: "uids", name: req.UID})
	}
	for k, vs := range req.Extra {
		for _, v := range vs {
			attrs = append(attrs, impersonationAttr{group: "authentication.k8s.io", resource: "userextras", subresource: k, name: v})
		}
	}
	return attrs
}

// CheckImpersonation implements ImpersonationChecker.
func (c *SARChecker) CheckImpersonation(ctx context.Context, actor *authn.Identity, req *ImpersonationRequest) (bool, string, error) {
	for _, attr := range attrsFor(req) {
		ok, err := c.allowed(ctx, actor, attr)
		if err != nil {
			return false, "", err
		}
		if !ok {
			return false, attr.refusal(actor.User), nil
		}
	}
	return true, "", nil
}

func (c *SARChecker) allowed(ctx context.Context, actor *authn.Identity, attr impersonationAttr) (bool, error) {
	key := cacheKey(actor, attr)
	if c.ttl > 0 {
		c.mu.Lock()
		d, hit := c.cache[key]
		c.mu.Unlock()
		if hit && c.now().Sub(d.at) < c.ttl {
			return d.allowed, nil
		}
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range actor.Extra {
		extra[k] = v
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: actor.User, UID: actor.UID, Groups: actor.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: attr.namespace, Verb: "impersonate", Group: attr.group,
			Resource: attr.resource, Subresource: attr.subresource, Name: attr.name,
		},
	}}
	res, err := c.reviews.Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("ask the API server whether %q may impersonate: %w", actor.User, err)
	}
	if c.ttl > 0 {
		c.mu.Lock()
		if len(c.cache) > 10000 {
			clear(c.cache)
		}
		c.cache[key] = sarDecision{allowed: res.Status.Allowed, at: c.now()}
		c.mu.Unlock()
	}
	return res.Status.Allowed, nil
}

func cacheKey(actor *authn.Identity, attr impersonationAttr) string {
	var b strings.Builder
	for _, s := range []string{actor.User, actor.UID, strings.Join(actor.Groups, "\x01"),
		attr.namespace, attr.group, attr.resource, attr.subresource, attr.name} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return b.String()
}
