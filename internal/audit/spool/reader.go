package spool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Record is one spooled record.
type Record struct {
	Seq     uint64
	Payload []byte
}

// Batch is a run of consecutive records handed to the writer.
type Batch struct {
	FirstSeq, LastSeq uint64
	Records           []Record
	// Token is the same for every delivery of this batch, also after a restart: use it as
	// the insert deduplication token so a retried insert is idempotent downstream.
	Token string
}

// Reader hands out the spool's records in order, in batches, and takes acknowledgements.
// There is one Reader per spool; its methods are safe for concurrent use but meant for one
// writer goroutine.
//
// Only records covered by an fsync are handed out, so nothing shipped downstream can vanish
// from the spool in a machine crash and have its sequence number reused.
//
// The batch in flight (handed out, not acked) is persisted in the checkpoint before Next
// returns it: until it is acked, every Next, before or after a restart, returns exactly that
// batch with the same token.
type Reader struct {
	s *Spool

	mu       sync.Mutex
	ack      position // where record acked+1 starts
	inflight bool
	first    uint64 // in-flight batch, valid when inflight
	last     uint64
	readEnd  position // after the in-flight batch
	f        *os.File // open segment, named fSeg
	fSeg     uint64
	br       *bufio.Reader
}

func newReader(s *Spool, cp checkpoint, ack position) *Reader {
	r := &Reader{s: s, ack: ack, readEnd: ack, br: bufio.NewReaderSize(nil, 256<<10)}
	if cp.inflightFirst != 0 && cp.inflightFirst < s.nextSeq {
		r.inflight, r.first, r.last = true, cp.inflightFirst, min(cp.inflightLast, s.nextSeq-1)
	}
	return r
}

func (r *Reader) closeFile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Next returns the oldest unacknowledged records, at most max of them (a batch still in
// flight from before is returned whole, whatever max). It blocks until a record is durable
// or ctx is done.
func (r *Reader) Next(ctx context.Context, max int) (Batch, error) {
	if max <= 0 {
		return Batch{}, errors.New("spool: next: max must be positive")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.inflight {
		var visible uint64
		for {
			s := r.s
			s.mu.Lock()
			visible = s.syncedSeq
			notify, closed, serr := s.notify, s.closed, s.err
			s.mu.Unlock()
			if closed {
				return Batch{}, ErrClosed
			}
			if visible >= r.ack.seq {
				break
			}
			if serr != nil {
				return Batch{}, serr
			}
			select {
			case <-ctx.Done():
				return Batch{}, ctx.Err()
			case <-notify:
			}
		}
		last := min(visible, r.ack.seq+uint64(max)-1)
		cp := checkpoint{acked: r.ack.seq - 1, inflightFirst: r.ack.seq, inflightLast: last}
		if err := writeFileAtomic(r.s.cfg.Dir, checkpointName, cp.encode()); err != nil {
			return Batch{}, fmt.Errorf("spool: write checkpoint: %w", err)
		}
		r.inflight, r.first, r.last = true, r.ack.seq, last
	}
	b, end, err := r.read(r.ack, r.last, true)
	if err != nil {
		return Batch{}, err
	}
	r.readEnd = end
	return b, nil
}

// Ack records that every record up to seq is durable downstream. Segments whose records are
// all acked are deleted. seq must not go past the batch returned by Next; acking part of a
// batch leaves the rest in flight (with a new token).
func (r *Reader) Ack(seq uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < r.ack.seq {
		return nil
	}
	if !r.inflight || seq > r.last {
		return fmt.Errorf("spool: ack %d: beyond the records handed out by Next", seq)
	}
	r.s.mu.Lock()
	closed := r.s.closed
	r.s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	cp := checkpoint{acked: seq}
	pos := r.readEnd
	if seq < r.last {
		_, p, err := r.read(r.ack, seq, false)
		if err != nil {
			return err
		}
		pos = p
		cp.inflightFirst, cp.inflightLast = seq+1, r.last
	}
	if err := writeFileAtomic(r.s.cfg.Dir, checkpointName, cp.encode()); err != nil {
		return fmt.Errorf("spool: write checkpoint: %w", err)
	}
	r.ack = pos
	if seq == r.last {
		r.inflight = false
	} else {
		r.first = seq + 1
	}
	s := r.s
	s.mu.Lock()
	s.ackedSeq = seq
	s.deleteAckedLocked()
	s.mu.Unlock()
	return nil
}

func (s *Spool) token(first, last uint64) string {
	return fmt.Sprintf("%s-%016x-%016x", s.id, first, last)
}

// read reads records from.seq..last starting at from, verifying each, and returns them and
// the position after the last one. With keep false the payloads are not kept.
func (r *Reader) read(from position, last uint64, keep bool) (Batch, position, error) {
	s := r.s
	s.mu.Lock()
	segs := make([]segment, len(s.segs))
	for i, sg := range s.segs {
		segs[i] = *sg
	}
	s.mu.Unlock()
	find := func(first uint64) (int, bool) {
		return slices.BinarySearchFunc(segs, first, func(sg segment, t uint64) int {
			switch {
			case sg.first < t:
				return -1
			case sg.first > t:
				return 1
			}
			return 0
		})
	}

	b := Batch{FirstSeq: from.seq, LastSeq: last, Token: s.token(from.seq, last)}
	if keep {
		b.Records = make([]Record, 0, last-from.seq+1)
	}
	var arena []byte
	var payload []byte
	var hdr [recHeaderSize]byte
	cur := from
	positioned := false
	for cur.seq <= last {
		i, ok := find(cur.seg)
		if !ok || cur.off >= segs[i].size {
			// The current segment is done (or gone): the next record starts a segment.
			if i, ok = find(cur.seq); !ok {
				return Batch{}, cur, &CorruptError{Seq: cur.seq, Reason: "no segment holds this record"}
			}
			cur = position{seg: segs[i].first, off: segHeaderSize, seq: cur.seq}
			positioned = false
		}
		seg := segs[i]
		if !positioned {
			if r.f == nil || r.fSeg != seg.first {
				if r.f != nil {
					r.f.Close()
					r.f = nil
				}
				f, err := os.Open(seg.path)
				if err != nil {
					return Batch{}, cur, fmt.Errorf("spool: open segment: %w", err)
				}
				r.f, r.fSeg = f, seg.first
			}
			r.br.Reset(io.NewSectionReader(r.f, cur.off, seg.size-cur.off))
			positioned = true
		}
		corrupt := func(reason string) error {
			return &CorruptError{File: seg.path, Offset: cur.off, Seq: cur.seq, Reason: reason}
		}
		if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
			return Batch{}, cur, corrupt(fmt.Sprintf("read record header: %v", err))
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if n > seg.size-cur.off-recHeaderSize {
			return Batch{}, cur, corrupt(fmt.Sprintf("record length %d past the segment end", n))
		}
		if keep {
			if n > int64(cap(arena)-len(arena)) {
				arena = make([]byte, 0, max(n, 256<<10))
			}
			payload = arena[len(arena) : len(arena)+int(n) : len(arena)+int(n)]
			arena = arena[:len(arena)+int(n)]
		} else {
			if int64(cap(payload)) < n {
				payload = make([]byte, n)
			}
			payload = payload[:n]
		}
		if _, err := io.ReadFull(r.br, payload); err != nil {
			return Batch{}, cur, corrupt(fmt.Sprintf("read record: %v", err))
		}
		if recordCRC(hdr[8:16], payload) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return Batch{}, cur, corrupt("checksum mismatch")
		}
		if seq := binary.LittleEndian.Uint64(hdr[8:16]); seq != cur.seq {
			return Batch{}, cur, corrupt(fmt.Sprintf("sequence %d where %d was expected", seq, cur.seq))
		}
		if keep {
			b.Records = append(b.Records, Record{Seq: cur.seq, Payload: payload})
		}
		cur.off += recHeaderSize + n
		cur.seq++
	}
	return b, cur, nil
}
