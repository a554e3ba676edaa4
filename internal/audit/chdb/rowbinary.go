package chdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Results are read in RowBinary: exact bytes (no text escaping to undo, no UTF-8 repair), and
// the cheapest format to decode.

var errShort = errors.New("RowBinary result ends inside a value")

// rbReader decodes RowBinary values; the first error sticks and later reads return zero values.
type rbReader struct {
	b   []byte
	err error
}

func (r *rbReader) done() bool { return r.err != nil || len(r.b) == 0 }

func (r *rbReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *rbReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rbReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errShort
		return ""
	}
	return string(r.take(int(n)))
}

func (r *rbReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *rbReader) strs() []string {
	n := r.uvarint()
	if n > uint64(len(r.b)) { // each element takes at least one byte
		r.err = errShort
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = r.str()
	}
	return s
}

// value reads one value of a schema column type, as the Go type schema.Values uses for it.
func (r *rbReader) value(typ string) (any, error) {
	var v any
	switch {
	case typ == "String" || typ == "LowCardinality(String)":
		v = r.str()
	case strings.HasPrefix(typ, "DateTime64(6"):
		v = time.UnixMicro(int64(r.u64())).UTC()
	case typ == "UInt64":
		v = r.u64()
	case typ == "Int64":
		v = int64(r.u64())
	case typ == "UInt16":
		if b := r.take(2); b != nil {
			v = binary.LittleEndian.Uint16(b)
		} else {
			v = uint16(0)
		}
	case strings.HasPrefix(typ, "Array("):
		v = r.strs()
	case strings.HasPrefix(typ, "Map("):
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			r.err = errShort
			break
		}
		m := make(map[string]string, n)
		for range n {
			k := r.str()
			m[k] = r.str()
		}
		v = m
	default:
		return nil, fmt.Errorf("no RowBinary decoding for column type %s: extend rbReader.value", typ)
	}
	return v, r.err
}

// decodeEvents decodes rows of all schema.Columns, in order.
func decodeEvents(b []byte) ([]*event.Event, error) {
	var events []*event.Event
	r := rbReader{b: b}
	vals := make([]any, len(schema.Columns))
	for !r.done() {
		for i, c := range schema.Columns {
			v, err := r.value(c.Type)
			if err != nil {
				return nil, fmt.Errorf("decode stored event %d, column %s: %w", len(events), c.Name, err)
			}
			vals[i] = v
		}
		e, err := schema.FromValues(vals)
		if err != nil {
			return nil, fmt.Errorf("decode stored event %d: %w", len(events), err)
		}
		events = append(events, e)
	}
	return events, r.err
}
