package chdb

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
)

// JSONCompactEachRow encoding, kept for BenchmarkInsertFormats: the text format Write used
// before RowBinary files measured faster.

// timeLayout is how DateTime64(6) values are written; the column's time zone is UTC.
const timeLayout = "2006-01-02 15:04:05.000000"

// appendRow appends e as one JSONCompactEachRow line, values in schema.Columns order.
func appendRow(b []byte, e *event.Event) []byte {
	b = append(b, '[')
	for i, v := range schema.Values(e) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendValue(b, v)
	}
	return append(b, ']', '\n')
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return appendString(b, v)
	case time.Time:
		b = append(b, '"')
		b = v.UTC().AppendFormat(b, timeLayout)
		return append(b, '"')
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case []string:
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']')
	case map[string]string:
		b = append(b, '{')
		first := true
		for k, s := range v {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, s)
		}
		return append(b, '}')
	default:
		// schema.Values returned a type this encoder does not know: a schema change without
		// an encoder change. Fail loudly in tests rather than store something else.
		panic(fmt.Sprintf("chdb: no JSON encoding for %T", v))
	}
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Only '"', '\\' and control characters are escaped;
// every other byte goes as is, so invalid UTF-8 is stored byte for byte (ClickHouse strings are
// bytes, and encoding/json would replace such bytes with U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
