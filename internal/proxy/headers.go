package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Impersonation headers, as kube-apiserver reads them.
const (
	hdrImpersonateUser  = "Impersonate-User"
	hdrImpersonateGroup = "Impersonate-Group"
	hdrImpersonateUID   = "Impersonate-Uid"
	hdrImpersonateExtra = "Impersonate-Extra-"
)

// ImpersonationRequest is what a client asked for with kubectl --as / --as-group / --as-uid /
// --as-user-extra. It is honoured only when the API server says the real user may impersonate.
type ImpersonationRequest struct {
	User   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// errSmuggledHeader is a client trying to set a header only a trusted front proxy may set.
type errSmuggledHeader struct{ name string }

func (e errSmuggledHeader) Error() string {
	return fmt.Sprintf("header %s is not accepted from clients: the gateway sets identity itself", e.name)
}

// takeClientIdentityHeaders removes every identity-bearing header a client sent, so nothing of
// it can reach the API server, and returns the impersonation the client asked for, if any.
// X-Remote-* (the API server's front-proxy headers) are refused outright: no client has a
// reason to send them, and one that does is trying to become someone else. So is a Connection
// header naming an identity header: a hop-by-hop trick to have a proxy on the way drop the
// identity the gateway sets. On error the header is left as it was, so the caller can name
// what was refused.
func takeClientIdentityHeaders(h http.Header) (*ImpersonationRequest, error) {
	var req ImpersonationRequest
	var taken []string
	users, uids := 0, 0
	for name, values := range h {
		// Matched on the lower-cased name, not the canonical one: CanonicalHeaderKey leaves a
		// name with an invalid byte as it is, and such a name must not slip past as unknown.
		lower := strings.ToLower(name)
		switch {
		case strings.HasPrefix(lower, "x-remote-"):
			return nil, errSmuggledHeader{name: http.CanonicalHeaderKey(name)}
		case lower == "connection":
			for _, v := range values {
				for _, token := range strings.Split(v, ",") {
					if t := http.CanonicalHeaderKey(strings.TrimSpace(token)); isIdentityHeader(t) {
						return nil, fmt.Errorf("header Connection may not name %s: the gateway sets identity itself", t)
					}
				}
			}
			continue
		case lower == "impersonate-user":
			users += len(values)
			if users != 1 || values[0] == "" {
				return nil, errors.New("send exactly one non-empty Impersonate-User header")
			}
			req.User = values[0]
		case lower == "impersonate-uid":
			uids += len(values)
			if uids != 1 || values[0] == "" {
				return nil, errors.New("send at most one non-empty Impersonate-Uid header")
			}
			req.UID = values[0]
		case lower == "impersonate-group":
			req.Groups = append(req.Groups, values...)
		case strings.HasPrefix(lower, "impersonate-extra-"):
			key, err := url.PathUnescape(lower[len(hdrImpersonateExtra):])
			if err != nil || key == "" {
				return nil, fmt.Errorf("malformed %s header", http.CanonicalHeaderKey(name))
			}
			if req.Extra == nil {
				req.Extra = map[string][]string{}
			}
			req.Extra[strings.ToLower(key)] = append(req.Extra[strings.ToLower(key)], values...)
		case strings.HasPrefix(lower, "impersonate-"):
			return nil, errSmuggledHeader{name: http.CanonicalHeaderKey(name)}
		default:
			continue
		}
		taken = append(taken, name)
	}
	if len(taken) == 0 {
		return nil, nil
	}
	if req.User == "" {
		return nil, errors.New("Impersonate-Group, Impersonate-Uid and Impersonate-Extra-* need Impersonate-User (kubectl --as)")
	}
	for _, name := range taken {
		delete(h, name)
	}
	return &req, nil
}

// isIdentityHeader reports the headers that say who a request is from (canonical names).
// Compared case-insensitively, for names CanonicalHeaderKey leaves as they are.
func isIdentityHeader(canonical string) bool {
	lower := strings.ToLower(canonical)
	return lower == "authorization" || strings.HasPrefix(lower, "impersonate-") ||
		strings.HasPrefix(lower, "x-remote-")
}

// identityHeaderNames lists, sorted, the names (never the values) of the identity headers on a
// refused request, for the audit record; Connection counts when it names one of them.
func identityHeaderNames(h http.Header) []string {
	var names []string
	for name, values := range h {
		canonical := http.CanonicalHeaderKey(name)
		switch {
		case isIdentityHeader(canonical):
			names = append(names, canonical)
		case strings.EqualFold(canonical, "Connection") && slices.ContainsFunc(values, func(v string) bool {
			return slices.ContainsFunc(strings.Split(v, ","), func(t string) bool {
				return isIdentityHeader(http.CanonicalHeaderKey(strings.TrimSpace(t)))
			})
		}):
			names = append(names, canonical)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// setImpersonation writes the identity the API server must act as. Called on a request whose
// client identity headers are already gone.
func setImpersonation(h http.Header, user, uid string, groups []string, extra map[string][]string) {
	h.Set(hdrImpersonateUser, user)
	if uid != "" {
		h.Set(hdrImpersonateUID, uid)
	}
	for _, g := range groups {
		h.Add(hdrImpersonateGroup, g)
	}
	for k, vs := range extra {
		name := hdrImpersonateExtra + escapeExtraKey(k)
		for _, v := range vs {
			h.Add(name, v)
		}
	}
}

// escapeExtraKey percent-encodes what may not appear in a header name (kube-apiserver unescapes
// it), e.g. "kaccess.io/source" -> "kaccess.io%2Fsource".
func escapeExtraKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if isTokenChar(c) && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
