package chdb

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/schema"
	"github.com/kaccess/kaccess/internal/audit/storetest"
)

// appendRowBinaryBySchema is the reference encoding: driven by schema.Values and the column
// types, so it follows any schema change; appendRowBinary must give the same rows.
func appendRowBinaryBySchema(t *testing.T, b []byte, e *event.Event) []byte {
	for i, v := range schema.Values(e) {
		switch v := v.(type) {
		case string:
			b = appendRBString(b, v)
		case time.Time:
			b = binary.LittleEndian.AppendUint64(b, uint64(v.UnixMicro()))
		case uint64:
			b = binary.LittleEndian.AppendUint64(b, v)
		case uint16:
			b = binary.LittleEndian.AppendUint16(b, v)
		case int64:
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		case []string:
			b = appendRBStrings(b, v)
		case map[string]string:
			b = binary.AppendUvarint(b, uint64(len(v)))
			for k, s := range v {
				b = appendRBString(b, k)
				b = appendRBString(b, s)
			}
		default:
			t.Fatalf("column %s: no RowBinary encoding for %T: extend the encoders", schema.Columns[i].Name, v)
		}
	}
	return b
}

func TestRowBinaryFollowsSchema(t *testing.T) {
	t.Parallel()
	in := storetest.Varied("gw", 1)
	var direct, reference []byte
	for _, e := range in {
		direct = appendRowBinary(direct, e)
		reference = appendRowBinaryBySchema(t, reference, e)
	}
	got, err := decodeEvents(direct)
	if err != nil {
		t.Fatalf("decode the direct encoding: %v", err)
	}
	want, err := decodeEvents(reference)
	if err != nil {
		t.Fatalf("decode the reference encoding: %v", err)
	}
	if len(got) != len(in) || len(want) != len(in) {
		t.Fatalf("decoded %d and %d events of %d", len(got), len(want), len(in))
	}
	for i := range in {
		for _, d := range storetest.Diff(got[i], want[i]) {
			t.Errorf("event %d: %s", i, d)
		}
		for _, d := range storetest.Diff(got[i], storetest.Normalize(in[i])) {
			t.Errorf("event %d round trip: %s", i, d)
		}
	}
}

func TestDecodeRejectsTruncatedRows(t *testing.T) {
	t.Parallel()
	row := appendRowBinary(nil, storetest.Varied("gw", 1)[0])
	for _, n := range []int{1, 7, 9, len(row) / 2, len(row) - 1} {
		if _, err := decodeEvents(row[:n]); err == nil {
			t.Errorf("a row cut to %d of %d bytes decoded without error", n, len(row))
		}
	}
	if _, err := decodeEvents(fmt.Appendf(nil, "%s", row)); err != nil {
		t.Errorf("whole row: %v", err)
	}
}
