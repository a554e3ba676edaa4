package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"unicode/utf8"

	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Redacted replaces every value the gateway must never record.
const Redacted = "<redacted>"

// Default limits of a Redactor.
const (
	DefaultMaxBodyBytes  = 64 << 10
	DefaultMaxParseBytes = 8 << 20
)

// Redactor cleans request and response bodies before they go into an event. It applies whatever
// the audit level (the level only decides whether a body is kept at all):
//
//   - Secret objects (also in lists, tables, watch events and patches to secrets): every value of data
//     and stringData is replaced by "<redacted>", keys are kept; so is the
//     kubectl last-applied-configuration annotation, which holds a copy of the data.
//   - TokenRequest status.token (serviceaccounts/token) and TokenReview spec.token.
//   - Anywhere in a body, a string field whose name is credential-like (authorization, token,
//     password, access_token, client_secret, ...).
//   - Bodies that are not JSON (protobuf, CBOR, plain text) are replaced by a marker saying why
//     they were omitted; YAML (server-side apply) is converted to JSON first.
//   - What remains is cut at MaxBodyBytes and replaced by a marker holding a prefix.
//
// Markers are JSON objects, so a body column always holds valid JSON:
//
//	{"kaccess.omitted":"protobuf body (application/vnd.kubernetes.protobuf)","originalBytes":1234}
//	{"kaccess.truncated":true,"originalBytes":901234,"prefix":"{\"kind\":\"PodList\",..."}
//
// The zero Redactor uses the default limits.
type Redactor struct {
	// MaxBodyBytes caps a recorded body (default 64 KiB).
	MaxBodyBytes int
	// MaxParseBytes caps the bodies parsed for redaction (default 8 MiB); larger ones are
	// omitted, since what cannot be inspected cannot be recorded safely.
	MaxParseBytes int
}

// BodyContext says what a body belongs to, for bodies that do not name their kind (patches,
// list items).
type BodyContext struct {
	ContentType string
	APIGroup    string
	Resource    string
	Subresource string
}

// Capture stores the request and response bodies into e as its Level allows, redacted: the
// request body from LevelRequest, the response body at LevelRequestResponse. The resource comes
// from e. Bodies of other levels are cleared.
func (r *Redactor) Capture(e *Event, reqBody []byte, reqContentType string, respBody []byte, respContentType string) {
	e.RequestBody, e.ResponseBody = nil, nil
	bc := BodyContext{APIGroup: e.APIGroup, Resource: e.Resource, Subresource: e.Subresource}
	if e.Level.AtLeast(LevelRequest) {
		bc.ContentType = reqContentType
		e.RequestBody = r.Redact(reqBody, bc)
	}
	if e.Level.AtLeast(LevelRequestResponse) {
		bc.ContentType = respContentType
		e.ResponseBody = r.Redact(respBody, bc)
	}
}

// Redact returns body as it may be recorded: nil for an empty body, otherwise valid JSON (the
// redacted body, or a marker). A body with nothing to redact and within the cap is returned
// unchanged (same bytes).
func (r *Redactor) Redact(body []byte, bc BodyContext) json.RawMessage {
	if len(body) == 0 {
		return nil
	}
	maxBody, maxParse := r.MaxBodyBytes, r.MaxParseBytes
	if maxBody <= 0 {
		maxBody = DefaultMaxBodyBytes
	}
	if maxParse <= 0 {
		maxParse = DefaultMaxParseBytes
	}
	ct := strings.ToLower(bc.ContentType)
	switch {
	case strings.Contains(ct, "protobuf") || bytes.HasPrefix(body, []byte("k8s\x00")):
		// client-go sends and asks for protobuf for built-in kinds: decode them with
		// client-go's scheme and record them as JSON like any other body. Custom resources
		// never come as protobuf; anything the scheme does not know is left out.
		j, ok := protobufToJSON(body)
		if !ok || len(body) > maxParse {
			return omitted("protobuf body ("+contentTypeOr(bc.ContentType)+")", len(body))
		}
		out, ok := redactJSON(j, hintFor(bc))
		if !ok {
			return omitted("protobuf body ("+contentTypeOr(bc.ContentType)+")", len(body))
		}
		if len(out) > maxBody {
			return truncated(out, maxBody, len(body))
		}
		return out
	case strings.Contains(ct, "cbor"):
		return omitted("CBOR body ("+bc.ContentType+")", len(body))
	case len(body) > maxParse:
		return omitted("body too large to redact", len(body))
	}
	in := body
	if strings.Contains(ct, "yaml") {
		j, err := yaml.YAMLToJSON(body)
		if err != nil {
			return omitted("YAML body that does not parse", len(body))
		}
		in = j
	}
	out, ok := redactJSON(in, hintFor(bc))
	if !ok {
		return omitted("not JSON ("+contentTypeOr(bc.ContentType)+")", len(body))
	}
	if len(out) > maxBody {
		return truncated(out, maxBody, len(body))
	}
	return out
}

func contentTypeOr(ct string) string {
	if ct == "" {
		return "no content type"
	}
	return ct
}

// hint is the kind a body is taken to be when it does not say.
type hint int

const (
	hintNone hint = iota
	hintSecret
	hintTokenRequest
	hintTokenReview
)

func hintFor(bc BodyContext) hint {
	switch {
	case bc.APIGroup == "" && bc.Resource == "secrets" && bc.Subresource == "":
		return hintSecret
	case bc.APIGroup == "" && bc.Resource == "serviceaccounts" && bc.Subresource == "token":
		return hintTokenRequest
	case bc.APIGroup == "authentication.k8s.io" && bc.Resource == "tokenreviews":
		return hintTokenReview
	}
	return hintNone
}

// redactJSON parses one JSON value, or a stream of them (a watch response), redacts it and
// returns the result: the input itself when nothing changed, a JSON array for a stream.
func redactJSON(in []byte, h hint) (json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var vals []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return nil, false
	}
	changed := false
	for _, v := range vals {
		if redactTop(v, h) {
			changed = true
		}
	}
	if !changed && len(vals) == 1 {
		return in, true
	}
	var out any = vals
	if len(vals) == 1 {
		out = vals[0]
	}
	b, err := marshalNoEscape(out)
	if err != nil {
		return nil, false
	}
	return b, true
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// redactTop handles the shapes a body comes in: an object, a watch event wrapping one, or a
// JSON patch (an array of operations) against a secret.
func redactTop(v any, h hint) bool {
	switch t := v.(type) {
	case map[string]any:
		if obj, ok := t["object"].(map[string]any); ok {
			if _, ok := t["type"].(string); ok && len(t) == 2 {
				return redactObject(obj, h)
			}
		}
		return redactObject(t, h)
	case []any:
		changed := false
		for _, op := range t {
			m, ok := op.(map[string]any)
			if !ok {
				continue
			}
			if h == hintSecret {
				if val, ok := m["value"]; ok {
					m["value"] = redactAllValues(val)
					changed = true
				}
			} else if redactCredentialKeys(m) {
				changed = true
			}
		}
		return changed
	}
	return false
}

// redactObject redacts one Kubernetes object by its kind (or the hint when it has none), then
// any credential-like fields anywhere in it.
func redactObject(obj map[string]any, h hint) bool {
	kind, _ := obj["kind"].(string)
	if kind == "" {
		switch h {
		case hintSecret:
			kind = "Secret"
		case hintTokenRequest:
			kind = "TokenRequest"
		case hintTokenReview:
			kind = "TokenReview"
		}
	}
	if kind == "PartialObjectMetadata" && h == hintSecret {
		kind = "Secret" // metadata only, but its last-applied annotation holds the data
	}
	changed := false
	switch {
	case kind == "Secret":
		for _, f := range []string{"data", "stringData"} {
			if v, ok := obj[f]; ok && v != nil {
				obj[f] = redactAllValues(v)
				changed = true
			}
		}
		if md, ok := obj["metadata"].(map[string]any); ok {
			if ann, ok := md["annotations"].(map[string]any); ok {
				if _, ok := ann[lastApplied]; ok {
					ann[lastApplied] = Redacted
					changed = true
				}
			}
		}
	case kind == "TokenRequest":
		changed = redactField(obj, "status", "token") || changed
	case kind == "TokenReview":
		changed = redactField(obj, "spec", "token") || changed
	case kind == "Table": // kubectl get: rows carry the object or its metadata
		if rows, ok := obj["rows"].([]any); ok {
			for _, row := range rows {
				if m, ok := at1(row, "object"); ok && redactObject(m, h) {
					changed = true
				}
			}
		}
	case kind == "List" || strings.HasSuffix(kind, "List"):
		itemHint := h
		if kind == "SecretList" {
			itemHint = hintSecret
		}
		if items, ok := obj["items"].([]any); ok {
			for _, it := range items {
				if m, ok := it.(map[string]any); ok && redactObject(m, itemHint) {
					changed = true
				}
			}
		}
	}
	if redactCredentialKeys(obj) {
		changed = true
	}
	return changed
}

func at1(v any, key string) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	child, ok := m[key].(map[string]any)
	return child, ok
}

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// redactAllValues keeps an object's keys and replaces every value; anything else is replaced
// whole.
func redactAllValues(v any) any {
	if m, ok := v.(map[string]any); ok {
		for k := range m {
			m[k] = Redacted
		}
		return m
	}
	return Redacted
}

func redactField(obj map[string]any, parent, field string) bool {
	p, ok := obj[parent].(map[string]any)
	if !ok {
		return false
	}
	if _, ok := p[field]; !ok {
		return false
	}
	p[field] = Redacted
	return true
}

// credentialKeys are field names (compared in lower case) whose string values are never
// recorded, wherever they appear.
var credentialKeys = map[string]bool{
	"authorization": true, "proxy-authorization": true, "token": true, "bearertoken": true,
	"bearer_token": true, "access_token": true, "accesstoken": true, "id_token": true,
	"idtoken": true, "refresh_token": true, "refreshtoken": true, "client_secret": true,
	"clientsecret": true, "password": true,
}

// redactCredentialKeys walks v and replaces string values of credential-like keys.
func redactCredentialKeys(v any) bool {
	changed := false
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if s, ok := val.(string); ok {
				if s != Redacted && credentialKeys[strings.ToLower(k)] {
					t[k] = Redacted
					changed = true
				}
				continue
			}
			if redactCredentialKeys(val) {
				changed = true
			}
		}
	case []any:
		for _, val := range t {
			if redactCredentialKeys(val) {
				changed = true
			}
		}
	}
	return changed
}

func omitted(reason string, n int) json.RawMessage {
	b, _ := marshalNoEscape(struct {
		Omitted string `json:"kaccess.omitted"`
		Bytes   int    `json:"originalBytes"`
	}{reason, n})
	return b
}

// truncated keeps a prefix of the redacted body, cut on a UTF-8 boundary.
func truncated(out []byte, maxBody, original int) json.RawMessage {
	cut := maxBody
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	b, _ := marshalNoEscape(struct {
		Truncated bool   `json:"kaccess.truncated"`
		Bytes     int    `json:"originalBytes"`
		Prefix    string `json:"prefix"`
	}{true, original, string(out[:cut])})
	return b
}

// RedactURI returns a request URI fit to record: the values of query parameters with
// credential-like names (access_token, token, password, ...) are replaced by "<redacted>".
// Kubernetes clients do not put credentials in URLs, but some tools do; a URI without a query
// is returned as is, without allocating.
func RedactURI(uri string) string {
	path, query, ok := strings.Cut(uri, "?")
	if !ok || !hasCredentialParam(query) {
		return uri
	}
	var b strings.Builder
	b.WriteString(path)
	b.WriteByte('?')
	for i, param := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		if key, _, hasValue := strings.Cut(param, "="); hasValue && isCredentialParam(key) {
			b.WriteString(key)
			b.WriteString("=" + url.QueryEscape(Redacted))
			continue
		}
		b.WriteString(param)
	}
	return b.String()
}

func hasCredentialParam(query string) bool {
	for query != "" {
		var param string
		param, query, _ = strings.Cut(query, "&")
		if key, _, hasValue := strings.Cut(param, "="); hasValue && isCredentialParam(key) {
			return true
		}
	}
	return false
}

func isCredentialParam(key string) bool {
	name, err := url.QueryUnescape(key)
	return err == nil && credentialKeys[strings.ToLower(name)]
}

// protobufToJSON decodes a Kubernetes protobuf envelope of a kind client-go's scheme knows and
// returns it as JSON with its apiVersion and kind.
func protobufToJSON(body []byte) ([]byte, bool) {
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil || gvk == nil {
		return nil, false
	}
	obj.GetObjectKind().SetGroupVersionKind(*gvk)
	j, err := json.Marshal(obj)
	return j, err == nil
}
