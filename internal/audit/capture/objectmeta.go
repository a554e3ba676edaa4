package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// maxMetaScan bounds what is looked at, and kept, of a create's response to find the new
// object's name: the API server writes metadata first (typed objects: name and namespace are
// its first fields; custom resources: keys sorted, so annotations and managedFields may come
// before the name). A name further in than this is not recorded.
const maxMetaScan = 16 << 10

// createdObject reads metadata.name and metadata.namespace from the start of a create's
// response body (b may be a prefix of it). done is false when b ends before they are known:
// the caller may try again with more of the body. JSON and Kubernetes protobuf are read,
// gzip-compressed or not (the API server compresses large responses); anything else has no
// name to offer (done, empty).
func createdObject(b []byte, contentType, contentEncoding string) (name, namespace string, done bool) {
	if contentEncoding != "" {
		if !strings.EqualFold(contentEncoding, "gzip") {
			return "", "", true
		}
		var short bool
		if b, short = gunzipPrefix(b); b == nil {
			return "", "", !short
		}
		defer func() { done = done || !short }()
	}
	switch {
	case bytes.HasPrefix(b, protobufMagic):
		return protobufMeta(b[len(protobufMagic):])
	case len(b) < len(protobufMagic) && bytes.HasPrefix(protobufMagic, b) && strings.Contains(contentType, "protobuf"):
		return "", "", false
	case strings.Contains(contentType, "json"), contentType == "":
		return jsonMeta(b)
	}
	return "", "", true
}

// protobufMagic starts every Kubernetes protobuf body (k8s.io/apimachinery runtime/serializer/protobuf).
var protobufMagic = []byte("k8s\x00")

// gunzipPrefix inflates as much of the gzip stream prefix b as it holds, up to maxMetaScan
// bytes. short says the stream went on past b (more of it may tell more).
func gunzipPrefix(b []byte) (out []byte, short bool) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
	}
	out = make([]byte, maxMetaScan)
	n, err := io.ReadFull(zr, out)
	return out[:n], errors.Is(err, io.ErrUnexpectedEOF) && n < maxMetaScan
}

// jsonMeta finds metadata.name and metadata.namespace in the JSON object at the start of b,
// without decoding anything else: keys are compared as written (the API server does not
// escape them) and other values are skipped over.
func jsonMeta(b []byte) (name, namespace string, done bool) {
	s := &jscan{b: b}
	var haveName, haveNS, inMeta, seenMeta bool
	var member func(key []byte) bool
	member = func(key []byte) bool {
		if !inMeta {
			if seenMeta || string(key) != "metadata" {
				return s.skip()
			}
			seenMeta, inMeta = true, true
			s.object(member)
			inMeta = false
			return false // nothing after metadata is wanted
		}
		var dst *string
		var have *bool
		switch string(key) {
		case "name":
			dst, have = &name, &haveName
		case "namespace":
			dst, have = &namespace, &haveNS
		default:
			return s.skip()
		}
		if v, ok := s.str(); ok {
			*dst = v
		} else if !s.skip() {
			return false
		}
		*have = true
		return !(haveName && haveNS)
	}
	s.object(member)
	return name, namespace, !s.short || (haveName && haveNS)
}

// jscan reads JSON from b at i. short is set when b ends inside what it reads.
type jscan struct {
	b     []byte
	i     int
	short bool
}

// next skips white space and returns the next byte, or 0 at the end of b.
func (s *jscan) next() byte {
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	s.short = true
	return 0
}

// object reads the object at i, calling member with each key; member reads the value and
// returns false to stop. object reports whether it read the whole object.
func (s *jscan) object(member func(key []byte) bool) bool {
	if s.next() != '{' {
		return false
	}
	s.i++
	if s.next() == '}' {
		s.i++
		return true
	}
	for {
		key, ok := s.raw()
		if !ok || s.next() != ':' {
			return false
		}
		s.i++
		if !member(key) {
			return false
		}
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// raw reads a string at i and returns it as written (escapes and all).
func (s *jscan) raw() ([]byte, bool) {
	if s.next() != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			s.i = j + 1
			return s.b[start:j], true
		}
	}
	s.short = true
	return nil, false
}

// str reads a string value at i, unescaped. It leaves i alone when the value is no string.
func (s *jscan) str() (string, bool) {
	if s.next() != '"' {
		return "", false
	}
	start := s.i
	v, ok := s.raw()
	if !ok {
		return "", false
	}
	// Invalid UTF-8 goes through encoding/json too, so a name reads as it would for any JSON
	// reader (each bad byte a U+FFFD), not as raw bytes.
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return string(v), true
	}
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return "", false
	}
	return out, true
}

// skip reads past one value.
func (s *jscan) skip() bool {
	switch s.next() {
	case 0:
		return false
	case '"':
		_, ok := s.raw()
		return ok
	case '{', '[':
		for depth := 0; s.i < len(s.b); {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.raw(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
	default: // a number, true, false or null
		for ; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return true
			}
		}
	}
	s.short = true
	return false
}

// protobufMeta finds the name and namespace in a Kubernetes protobuf envelope (a
// runtime.Unknown whose field 2 holds the object). Every built-in kind (the only ones served
// as protobuf) has its ObjectMeta as field 1, whose fields 1 and 3 are the name and the
// namespace; fields come in number order, so a prefix is enough.
func protobufMeta(b []byte) (name, namespace string, done bool) {
	raw, rawCut, ok := pbField(b, 2, false)
	if !ok {
		return "", "", !rawCut
	}
	meta, metaCut, ok := pbField(raw, 1, !rawCut)
	if !ok {
		return "", "", !metaCut
	}
	for len(meta) > 0 {
		num, typ, n := protowire.ConsumeTag(meta)
		if n < 0 {
			return name, namespace, !metaCut
		}
		if num > 3 {
			return name, namespace, true
		}
		meta = meta[n:]
		n = protowire.ConsumeFieldValue(num, typ, meta)
		if n < 0 {
			return name, namespace, !metaCut
		}
		if typ == protowire.BytesType && (num == 1 || num == 3) {
			v, _ := protowire.ConsumeBytes(meta)
			if num == 1 {
				name = string(v)
			} else {
				namespace = string(v)
			}
		}
		meta = meta[n:]
	}
	return name, namespace, !metaCut
}

// pbField returns the length-delimited field num of the message b. whole says b is the whole
// message; otherwise it may be a prefix, and the field is returned as far as b holds it. cut
// says the field, or the search for it, was cut short by the end of b.
func pbField(b []byte, num protowire.Number, whole bool) (v []byte, cut, ok bool) {
	for len(b) > 0 {
		n0, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, !whole, false
		}
		b = b[n:]
		if n0 == num && typ == protowire.BytesType {
			l, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, !whole, false
			}
			b = b[n:]
			if uint64(len(b)) < l {
				return b, !whole, !whole
			}
			return b[:l], false, true
		}
		n = protowire.ConsumeFieldValue(n0, typ, b)
		if n < 0 {
			return nil, !whole, false
		}
		b = b[n:]
	}
	return nil, !whole, false
}

// metaScan follows a create's response for the new object's name and namespace.
type metaScan struct {
	on           bool   // still looking
	setNamespace bool   // the URL named no namespace: the object's is recorded
	head         []byte // the response so far, once one write did not hold the name
	scanned      int    // len(head) at the last look
}

// scanMeta looks for the created object's name in the response, written p at a time; a nil p
// says the response is over. Usually the first write holds the metadata and nothing is
// copied; otherwise the response is kept up to maxMetaScan bytes and looked at again each
// time the kept part doubled, so many small writes cost a few looks.
func (x *exchange) scanMeta(p []byte) {
	m := &x.meta
	final := p == nil
	buf := p
	switch {
	case m.head != nil:
		m.head = append(m.head, p[:min(len(p), maxMetaScan-len(m.head))]...)
		buf = m.head
		if !final && len(buf) < maxMetaScan && len(buf) < 2*m.scanned {
			return
		}
	case final:
		m.on = false
		return
	case len(buf) > maxMetaScan:
		buf = buf[:maxMetaScan]
	}
	h := x.w.Header()
	name, namespace, done := createdObject(buf, h.Get("Content-Type"), h.Get("Content-Encoding"))
	x.setCreated(name, namespace)
	if done || final || len(buf) >= maxMetaScan {
		*m = metaScan{}
		return
	}
	if m.head == nil {
		m.head = append(make([]byte, 0, min(maxMetaScan, 2*len(p))), p...)
	}
	m.scanned = len(buf)
}

// setCreated records the name and namespace the API server gave the created object. A
// Namespace is recorded with its own name as namespace, as the API server's request info
// has it for every later request to it (GET /api/v1/namespaces/team-a is namespace team-a).
func (x *exchange) setCreated(name, namespace string) {
	e := &x.ev
	if name != "" {
		e.Name = name
	}
	if !x.meta.setNamespace {
		return
	}
	if namespace != "" {
		e.Namespace = namespace
	}
	if e.APIGroup == "" && e.Resource == "namespaces" && e.Subresource == "" && e.Name != "" {
		e.Namespace = e.Name
	}
}
