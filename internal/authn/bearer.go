package authn

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// wsProtocolPrefix carries a bearer token in Sec-WebSocket-Protocol for clients (browsers) that
// cannot set an Authorization header on a WebSocket; kube-apiserver accepts the same form.
const wsProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// Credential errors. Their text goes to the client, so it names the problem, never the token.
var (
	ErrNoCredential       = errors.New("no credential: send \"Authorization: Bearer <token>\" (run `kaccess login`)")
	ErrMultipleCredential = errors.New("more than one credential: send exactly one Authorization header, or one WebSocket bearer protocol, not both")
	ErrNotBearer          = errors.New("unsupported Authorization scheme: only \"Bearer <token>\" is accepted")
	ErrBadWebSocketToken  = errors.New("WebSocket bearer protocol is not valid base64url")
)

// TakeBearerToken returns the request's bearer token and removes it from the request, so that
// it can never travel upstream. It refuses ambiguous requests (two Authorization headers, or a
// header and a WebSocket protocol token) rather than guess which one counts.
func TakeBearerToken(r *http.Request) (string, error) {
	auth := r.Header.Values("Authorization")
	// Removed before anything can fail: a refused request must not carry the header on
	// either (a caller that logs or forwards it after an error).
	r.Header.Del("Authorization")
	wsToken, hasWS, err := takeWebSocketToken(r)
	if err != nil {
		// The protocol header may hold a (malformed or second) token: it goes too.
		r.Header.Del("Sec-WebSocket-Protocol")
		return "", err
	}
	switch {
	case len(auth) > 1 || (len(auth) == 1 && hasWS):
		return "", ErrMultipleCredential
	case hasWS:
		if !validToken(wsToken) {
			return "", ErrBadWebSocketToken
		}
		return wsToken, nil
	case len(auth) == 0:
		return "", ErrNoCredential
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(auth[0]), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", ErrNotBearer
	}
	token = strings.TrimSpace(token)
	if !validToken(token) {
		return "", ErrNotBearer
	}
	return token, nil
}

// validToken accepts a non-empty token of visible ASCII without commas: what every token kind
// kaccess verifies (JWTs, opaque OIDC tokens) is made of, and nothing that could split a
// header, a log line or a list. The WebSocket form decodes to arbitrary bytes, so it needs
// this as much as the header form.
func validToken(token string) bool {
	if token == "" {
		return false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return false
		}
	}
	return true
}

// takeWebSocketToken finds and removes the bearer entry from Sec-WebSocket-Protocol, keeping
// the real subprotocols (e.g. v5.channel.k8s.io) for the upstream.
func takeWebSocketToken(r *http.Request) (token string, found bool, err error) {
	values := r.Header.Values("Sec-WebSocket-Protocol")
	if len(values) == 0 {
		return "", false, nil
	}
	var keep []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			encoded, isToken := strings.CutPrefix(p, wsProtocolPrefix)
			if !isToken {
				keep = append(keep, p)
				continue
			}
			if found {
				return "", false, ErrMultipleCredential
			}
			raw, decErr := base64.RawURLEncoding.DecodeString(strings.TrimRight(encoded, "="))
			if decErr != nil || len(raw) == 0 {
				return "", false, ErrBadWebSocketToken
			}
			token, found = string(raw), true
		}
	}
	if found {
		r.Header.Del("Sec-WebSocket-Protocol")
		if len(keep) > 0 {
			r.Header.Set("Sec-WebSocket-Protocol", strings.Join(keep, ", "))
		}
	}
	return token, found, nil
}
