package chdb

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

type fakeQuerier struct{ seen []string }

func (f *fakeQuerier) Query(sql, format string) ([]byte, error) {
	f.seen = append(f.seen, format+":"+sql)
	if strings.HasPrefix(sql, "BAD") {
		return nil, errors.New("Code: 62. Syntax error")
	}
	return []byte("result of " + sql + "\x00binary"), nil
}

func request(format, sql string) []byte {
	var b bytes.Buffer
	_ = writeFrame(&b, []byte(format))
	_ = writeFrame(&b, []byte(sql))
	return b.Bytes()
}

func TestServeAnswersInOrder(t *testing.T) {
	t.Parallel()
	in := append(request("RowBinary", "SELECT 1"), request("TabSeparated", "BAD query")...)
	var out bytes.Buffer
	q := &fakeQuerier{}
	if err := Serve(bytes.NewReader(in), &out, q); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if len(q.seen) != 2 || q.seen[0] != "RowBinary:SELECT 1" {
		t.Errorf("queries seen: %q", q.seen)
	}
	for _, want := range []struct {
		status byte
		body   string
	}{{statusOK, "result of SELECT 1\x00binary"}, {statusErr, "Code: 62. Syntax error"}} {
		status, err := out.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		body, err := readFrame(&out)
		if err != nil {
			t.Fatal(err)
		}
		if status != want.status || string(body) != want.body {
			t.Errorf("answer (%d, %q), want (%d, %q)", status, body, want.status, want.body)
		}
	}
}

func TestServeReportsTornRequest(t *testing.T) {
	t.Parallel()
	in := request("TabSeparated", "SELECT 1")
	err := Serve(bytes.NewReader(in[:len(in)-3]), io.Discard, &fakeQuerier{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Serve on a torn request: %v, want ErrUnexpectedEOF", err)
	}
}

func TestReadFrameRejectsHugeLength(t *testing.T) {
	t.Parallel()
	_, err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}))
	if err == nil || !strings.Contains(err.Error(), "out of step") {
		t.Errorf("readFrame of a 4 GiB length: %v", err)
	}
}
