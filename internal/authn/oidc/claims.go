package oidc

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// unverifiedHeader and unverifiedIssuer read a compact JWS without checking anything: only to
// pick the issuer's config and to refuse a disallowed algorithm early. A token that is not a
// three-part JWS with a JSON payload is not this source's.
type unverified struct {
	alg string
	iss string
}

func peek(token string) (unverified, bool) {
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return unverified{}, false
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || h == "" || p == "" {
		return unverified{}, false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var payload struct {
		Iss any `json:"iss"`
	}
	if decodeSegment(h, &header) != nil || decodeSegment(p, &payload) != nil {
		return unverified{}, false
	}
	iss, _ := payload.Iss.(string)
	if iss == "" {
		return unverified{}, false
	}
	return unverified{alg: header.Alg, iss: iss}, true
}

// canonicalJWS reports whether token is a compact JWS in the one spelling of its bytes:
// base64url without padding, unused low bits zero, nothing outside the alphabet. go-jose
// decodes leniently (it also skips CR and LF), so without this one signed token would verify
// under many strings, each its own cache entry and none the token the issuer wrote.
func canonicalJWS(token string) bool {
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		return false
	}
	for _, seg := range segs {
		if _, err := strictB64.DecodeString(seg); err != nil {
			return false
		}
	}
	return true
}

var strictB64 = base64.RawURLEncoding.Strict()

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// numericDate reads an optional NumericDate claim (seconds since the epoch, maybe fractional).
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok || v == nil {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("not a number")
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false, err
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true, nil
}

// stringList reads a claim that is a list of strings or one string; absent is nil, no error.
func stringList(claims map[string]any, name string) ([]string, error) {
	v, ok := claims[name]
	if !ok || v == nil {
		return nil, nil
	}
	switch t := v.(type) {
	case string:
		return []string{t}, nil
	case []any:
		out := make([]string, 0, len(t))
		for i, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %d is not a string", i)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("a %s, not a list of strings", jsonType(v))
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		return "string"
	default:
		return "null"
	}
}
