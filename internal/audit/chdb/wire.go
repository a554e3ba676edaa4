package chdb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The helper protocol, over the helper's stdin and stdout, one request at a time:
//
//	request:  frame(format) frame(sql)
//	response: status byte (0 ok, 1 error), frame(result or error message)
//	frame:    uint32 big-endian length, then that many bytes
//
// Length-prefixed frames carry any bytes, so results in binary formats need no escaping.

const (
	statusOK  = 0
	statusErr = 1
	// maxFrame bounds what one side will allocate on the other's word: a garbled length must
	// not make the gateway allocate gigabytes.
	maxFrame = 1 << 30
)

// Querier runs one query; the helper serves an engine.Engine through it.
type Querier interface {
	Query(sql, format string) ([]byte, error)
}

// Serve answers requests from r on w with q until r ends (the gateway closed the pipe or died).
// It returns nil at a clean end of input.
func Serve(r io.Reader, w io.Writer, q Querier) error {
	br := bufio.NewReaderSize(r, 1<<20)
	bw := bufio.NewWriterSize(w, 1<<20)
	for {
		format, err := readFrame(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read request format: %w", err)
		}
		sql, err := readFrame(br)
		if err != nil {
			return fmt.Errorf("read request query: %w", err)
		}
		out, qerr := q.Query(string(sql), string(format))
		status := byte(statusOK)
		if qerr != nil {
			status, out = statusErr, []byte(qerr.Error())
		}
		if err := bw.WriteByte(status); err != nil {
			return err
		}
		if err := writeFrame(bw, out); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write response: %w", err)
		}
	}
}

func writeFrame(w io.Writer, b []byte) error {
	if len(b) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte limit", len(b), maxFrame)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame returns io.EOF only when r ends cleanly before a frame starts.
func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds the %d-byte limit: the stream is out of step", size, maxFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// noEOF turns an EOF inside a frame into ErrUnexpectedEOF: the peer died mid-message.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
