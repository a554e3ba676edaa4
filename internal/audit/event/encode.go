package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Spool encoding, version 1.
//
//	byte    version (1)
//	field*  each: one tag byte, then the value; tags strictly increasing; a field whose value
//	        is empty or zero is left out
//
// Values by tag type:
//
//	string        uvarint length, bytes
//	int           zigzag varint (time: microseconds since 0001-01-01 UTC; durations: ns)
//	string list   uvarint count (> 0), then count strings (elements may be empty)
//	map           uvarint count (> 0), then count key/value string pairs, keys strictly increasing
//	bytes         uvarint length, bytes
//
// The encoding is canonical: Unmarshal accepts only what Marshal produces (minimal varints, no
// zero-valued fields, ordered tags and keys, nothing trailing), so an accepted record re-encodes
// byte for byte. A new field gets a new, higher tag; an older reader rejects records with tags it
// does not know instead of silently dropping data.
const formatVersion = 1

// Field tags. Never renumber: they are on disk.
const (
	tagTime byte = iota + 1
	tagEventID
	tagKind
	tagStage
	tagCluster
	tagGatewayInstance
	tagRequestID
	tagUser
	tagUID
	tagGroups
	tagSource
	tagSessionIDHash
	tagImpersonatedUser
	tagImpersonatedGroups
	tagGrantIDs
	tagSourceIP
	tagUserAgent
	tagVerb
	tagAPIGroup
	tagAPIVersion
	tagResource
	tagSubresource
	tagNamespace
	tagName
	tagRequestURI
	tagMethod
	tagResponseCode
	tagDecision
	tagLatency
	tagDuration
	tagBytesIn
	tagBytesOut
	tagLevel
	tagRequestBody
	tagResponseBody
	tagExtra
	tagRefusalReason
	tagEnd // first unknown tag
)

// zeroTimeMicros is time.Time{}.UnixMicro(). Times are encoded as microseconds since the zero
// time, so the zero time is 0 and left out like any other zero value.
var zeroTimeMicros = time.Time{}.UnixMicro()

// Marshal appends the encoding of e to dst and returns the extended slice. With a dst of enough
// capacity it does not allocate (Extra with more than 16 keys excepted). Time is truncated to
// microseconds and read back as UTC.
func Marshal(dst []byte, e *Event) []byte {
	dst = append(dst, formatVersion)
	dst = appendInt(dst, tagTime, e.Time.UnixMicro()-zeroTimeMicros)
	dst = appendString(dst, tagEventID, e.EventID)
	dst = appendString(dst, tagKind, string(e.Kind))
	dst = appendString(dst, tagStage, string(e.Stage))
	dst = appendString(dst, tagCluster, e.Cluster)
	dst = appendString(dst, tagGatewayInstance, e.GatewayInstance)
	dst = appendString(dst, tagRequestID, e.RequestID)
	dst = appendString(dst, tagUser, e.User)
	dst = appendString(dst, tagUID, e.UID)
	dst = appendList(dst, tagGroups, e.Groups)
	dst = appendString(dst, tagSource, e.Source)
	dst = appendString(dst, tagSessionIDHash, e.SessionIDHash)
	dst = appendString(dst, tagImpersonatedUser, e.ImpersonatedUser)
	dst = appendList(dst, tagImpersonatedGroups, e.ImpersonatedGroups)
	dst = appendList(dst, tagGrantIDs, e.GrantIDs)
	dst = appendString(dst, tagSourceIP, e.SourceIP)
	dst = appendString(dst, tagUserAgent, e.UserAgent)
	dst = appendString(dst, tagVerb, e.Verb)
	dst = appendString(dst, tagAPIGroup, e.APIGroup)
	dst = appendString(dst, tagAPIVersion, e.APIVersion)
	dst = appendString(dst, tagResource, e.Resource)
	dst = appendString(dst, tagSubresource, e.Subresource)
	dst = appendString(dst, tagNamespace, e.Namespace)
	dst = appendString(dst, tagName, e.Name)
	dst = appendString(dst, tagRequestURI, e.RequestURI)
	dst = appendString(dst, tagMethod, e.Method)
	dst = appendInt(dst, tagResponseCode, int64(e.ResponseCode))
	dst = appendString(dst, tagDecision, string(e.Decision))
	dst = appendInt(dst, tagLatency, int64(e.Latency))
	dst = appendInt(dst, tagDuration, int64(e.Duration))
	dst = appendInt(dst, tagBytesIn, e.BytesIn)
	dst = appendInt(dst, tagBytesOut, e.BytesOut)
	dst = appendString(dst, tagLevel, string(e.Level))
	dst = appendBytes(dst, tagRequestBody, e.RequestBody)
	dst = appendBytes(dst, tagResponseBody, e.ResponseBody)
	if len(e.Extra) > 0 {
		var arr [16]string
		keys := arr[:0]
		for k := range e.Extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, tagExtra)
		dst = binary.AppendUvarint(dst, uint64(len(keys)))
		for _, k := range keys {
			dst = appendRaw(dst, k)
			dst = appendRaw(dst, e.Extra[k])
		}
	}
	dst = appendString(dst, tagRefusalReason, e.RefusalReason)
	return dst
}

func appendRaw(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendString(dst []byte, tag byte, s string) []byte {
	if s == "" {
		return dst
	}
	return appendRaw(append(dst, tag), s)
}

func appendBytes(dst []byte, tag byte, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	dst = binary.AppendUvarint(append(dst, tag), uint64(len(b)))
	return append(dst, b...)
}

func appendInt(dst []byte, tag byte, v int64) []byte {
	if v == 0 {
		return dst
	}
	return binary.AppendVarint(append(dst, tag), v)
}

func appendList(dst []byte, tag byte, l []string) []byte {
	if len(l) == 0 {
		return dst
	}
	dst = binary.AppendUvarint(append(dst, tag), uint64(len(l)))
	for _, s := range l {
		dst = appendRaw(dst, s)
	}
	return dst
}

// ErrCorrupt is wrapped by every error Unmarshal returns for a malformed record.
var ErrCorrupt = errors.New("corrupt audit event record")

// Unmarshal decodes a record written by Marshal into e, replacing all of e. Strings share one
// copy of b; bodies are copied; b may be reused afterwards. Empty lists, maps and bodies decode
// as nil.
func Unmarshal(b []byte, e *Event) error {
	*e = Event{}
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrCorrupt)
	}
	if b[0] != formatVersion {
		return fmt.Errorf("%w: unknown format version %d", ErrCorrupt, b[0])
	}
	d := decoder{b: b, s: string(b), off: 1}
	last := byte(0)
	for d.off < len(d.b) {
		tag := d.b[d.off]
		if tag <= last || tag >= tagEnd {
			return d.fail(fmt.Sprintf("unexpected field tag %d after %d", tag, last))
		}
		last = tag
		d.off++
		var ok bool
		switch tag {
		case tagTime:
			var m int64
			if m, ok = d.int(); ok {
				e.Time = time.UnixMicro(m + zeroTimeMicros).UTC()
			}
		case tagEventID:
			e.EventID, ok = d.str()
		case tagKind:
			var s string
			s, ok = d.str()
			e.Kind = Kind(s)
		case tagStage:
			var s string
			s, ok = d.str()
			e.Stage = Stage(s)
		case tagCluster:
			e.Cluster, ok = d.str()
		case tagGatewayInstance:
			e.GatewayInstance, ok = d.str()
		case tagRequestID:
			e.RequestID, ok = d.str()
		case tagUser:
			e.User, ok = d.str()
		case tagUID:
			e.UID, ok = d.str()
		case tagGroups:
			e.Groups, ok = d.list()
		case tagSource:
			e.Source, ok = d.str()
		case tagSessionIDHash:
			e.SessionIDHash, ok = d.str()
		case tagImpersonatedUser:
			e.ImpersonatedUser, ok = d.str()
		case tagImpersonatedGroups:
			e.ImpersonatedGroups, ok = d.list()
		case tagGrantIDs:
			e.GrantIDs, ok = d.list()
		case tagSourceIP:
			e.SourceIP, ok = d.str()
		case tagUserAgent:
			e.UserAgent, ok = d.str()
		case tagVerb:
			e.Verb, ok = d.str()
		case tagAPIGroup:
			e.APIGroup, ok = d.str()
		case tagAPIVersion:
			e.APIVersion, ok = d.str()
		case tagResource:
			e.Resource, ok = d.str()
		case tagSubresource:
			e.Subresource, ok = d.str()
		case tagNamespace:
			e.Namespace, ok = d.str()
		case tagName:
			e.Name, ok = d.str()
		case tagRequestURI:
			e.RequestURI, ok = d.str()
		case tagMethod:
			e.Method, ok = d.str()
		case tagResponseCode:
			var v int64
			v, ok = d.int()
			if ok && (v < math.MinInt32 || v > math.MaxInt32) {
				ok = false
			}
			e.ResponseCode = int(v)
		case tagDecision:
			var s string
			s, ok = d.str()
			e.Decision = Decision(s)
		case tagLatency:
			var v int64
			v, ok = d.int()
			e.Latency = time.Duration(v)
		case tagDuration:
			var v int64
			v, ok = d.int()
			e.Duration = time.Duration(v)
		case tagBytesIn:
			e.BytesIn, ok = d.int()
		case tagBytesOut:
			e.BytesOut, ok = d.int()
		case tagLevel:
			var s string
			s, ok = d.str()
			e.Level = Level(s)
		case tagRequestBody:
			e.RequestBody, ok = d.bytes()
		case tagResponseBody:
			e.ResponseBody, ok = d.bytes()
		case tagExtra:
			e.Extra, ok = d.extra()
		case tagRefusalReason:
			e.RefusalReason, ok = d.str()
		}
		if !ok {
			return d.fail(fmt.Sprintf("bad value for field tag %d", tag))
		}
	}
	return nil
}

type decoder struct {
	b   []byte
	s   string // one copy of b that decoded strings share
	off int
}

func (d *decoder) fail(msg string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrCorrupt, msg, d.off)
}

// uvarint reads a minimally encoded uvarint.
func (d *decoder) uvarint() (uint64, bool) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 || (n > 1 && d.b[d.off+n-1] == 0) {
		return 0, false
	}
	d.off += n
	return v, true
}

// int reads a non-zero zigzag varint.
func (d *decoder) int() (int64, bool) {
	u, ok := d.uvarint()
	if !ok || u == 0 {
		return 0, false
	}
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v, true
}

// raw reads a length-prefixed string that may be empty.
func (d *decoder) raw() (string, bool) {
	n, ok := d.uvarint()
	if !ok || n > uint64(len(d.b)-d.off) {
		return "", false
	}
	s := d.s[d.off : d.off+int(n)]
	d.off += int(n)
	return s, true
}

// str reads a non-empty string field.
func (d *decoder) str() (string, bool) {
	s, ok := d.raw()
	return s, ok && s != ""
}

func (d *decoder) bytes() ([]byte, bool) {
	s, ok := d.str()
	if !ok {
		return nil, false
	}
	return []byte(s), true
}

// count reads a non-zero element count, bounded by the bytes left (each element takes at least
// one byte per string), so garbage cannot ask for a huge allocation.
func (d *decoder) count(perElem int) (int, bool) {
	n, ok := d.uvarint()
	if !ok || n == 0 || n > uint64((len(d.b)-d.off)/perElem) {
		return 0, false
	}
	return int(n), true
}

func (d *decoder) list() ([]string, bool) {
	n, ok := d.count(1)
	if !ok {
		return nil, false
	}
	l := make([]string, n)
	for i := range l {
		if l[i], ok = d.raw(); !ok {
			return nil, false
		}
	}
	return l, true
}

func (d *decoder) extra() (map[string]string, bool) {
	n, ok := d.count(2)
	if !ok {
		return nil, false
	}
	m := make(map[string]string, n)
	prev := ""
	for i := range n {
		k, ok := d.raw()
		if !ok || (i > 0 && k <= prev) {
			return nil, false
		}
		v, ok := d.raw()
		if !ok {
			return nil, false
		}
		m[k], prev = v, k
	}
	return m, true
}
