package spool

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// position is where the record with sequence number seq starts: segment (by first seq) and
// byte offset.
type position struct {
	seg uint64
	off int64
	seq uint64
}

// recover scans every segment, cuts a torn tail off the last one, deletes fully acked
// segments, opens the active segment and returns the position of record acked+1.
func (s *Spool) recover(acked uint64) (position, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return position{}, fmt.Errorf("spool: list segments: %w", err)
	}
	var firsts []uint64
	for _, e := range entries {
		if first, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)

	ackPos := position{seq: acked + 1}
	found := false
	for i, first := range firsts {
		last := i == len(firsts)-1
		seg := &segment{first: first, path: filepath.Join(s.cfg.Dir, segName(first))}
		f, pos, err := s.scanSegment(seg, last, acked)
		if err != nil {
			return position{}, err
		}
		if pos.seq != 0 {
			ackPos, found = pos, true
		}
		if i > 0 {
			prev := s.segs[len(s.segs)-1]
			if seg.first != prev.last+1 {
				if f != nil {
					f.Close()
				}
				return position{}, &CorruptError{File: seg.path, Seq: prev.last + 1,
					Reason: fmt.Sprintf("sequence gap: previous segment ends at %d, this one starts at %d", prev.last, seg.first)}
			}
		}
		s.segs = append(s.segs, seg)
		s.diskBytes += seg.size
		if last {
			s.active = f
		}
	}

	s.nextSeq = acked + 1
	if n := len(s.segs); n > 0 {
		if first := s.segs[0].first; first > acked+1 {
			return position{}, &CorruptError{File: s.segs[0].path, Seq: acked + 1,
				Reason: fmt.Sprintf("records %d..%d are missing: acked up to %d, oldest segment starts at %d", acked+1, first-1, acked, first)}
		}
		s.nextSeq = max(s.nextSeq, s.segs[n-1].last+1)
	}
	if n := len(s.segs); n == 0 || s.segs[n-1].last+1 != s.nextSeq {
		// No segment yet, or the checkpoint is ahead of the data (records acked downstream
		// but lost here): start a segment at the next sequence number.
		if n > 0 {
			s.cfg.Logger.Warn("spool checkpoint is ahead of the data; continuing after the acked sequence", "acked_seq", acked, "last_seq", s.segs[n-1].last)
			if seg := s.segs[n-1]; seg.last < seg.first {
				s.active.Close()
				s.active = nil
				os.Remove(seg.path)
				s.diskBytes -= seg.size
				s.segs = s.segs[:n-1]
			}
		}
		if err := s.rollLocked(); err != nil {
			return position{}, err
		}
	}
	s.deleteAckedLocked()
	// What the previous process wrote may still be only in the page cache.
	if err := s.active.Sync(); err != nil {
		return position{}, fmt.Errorf("spool: fsync: %w", err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		return position{}, fmt.Errorf("spool: fsync dir: %w", err)
	}
	if !found {
		active := s.segs[len(s.segs)-1]
		ackPos = position{seg: active.first, off: active.size, seq: s.nextSeq}
	}
	return ackPos, nil
}

// scanSegment validates one segment. A bad record in the last segment is a torn tail: the
// file is truncated to its last good record and the cut reported. Anywhere else it is a
// *CorruptError. The last segment is returned open for writing. pos is the position of
// record acked+1 if this segment holds it.
func (s *Spool) scanSegment(seg *segment, last bool, acked uint64) (f *os.File, pos position, err error) {
	flag := os.O_RDONLY
	if last {
		flag = os.O_RDWR
	}
	f, err = os.OpenFile(seg.path, flag, 0)
	if err != nil {
		return nil, pos, fmt.Errorf("spool: open segment: %w", err)
	}
	defer func() {
		if err != nil || !last {
			f.Close()
			f = nil
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, pos, fmt.Errorf("spool: stat segment: %w", err)
	}
	size := fi.Size()
	seg.last = seg.first - 1

	bad := func(off int64, reason string) error {
		if !last {
			return &CorruptError{File: seg.path, Offset: off, Seq: seg.last + 1, Reason: reason}
		}
		t := &TornTail{File: seg.path, Offset: off, DroppedBytes: size - off, Reason: reason}
		if off < segHeaderSize {
			t.Offset = 0
			if err := f.Truncate(0); err != nil {
				return fmt.Errorf("spool: truncate torn tail: %w", err)
			}
			if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
				return fmt.Errorf("spool: rewrite segment header: %w", err)
			}
			off = segHeaderSize
		} else if err := f.Truncate(off); err != nil {
			return fmt.Errorf("spool: truncate torn tail: %w", err)
		}
		seg.size = off
		s.recovered = t
		s.cfg.Logger.Warn("spool torn tail cut off", "file", t.File, "offset", t.Offset,
			"dropped_bytes", t.DroppedBytes, "reason", reason, "last_good_seq", seg.last)
		return nil
	}

	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	var hdr [recHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:segHeaderSize]); err != nil || string(hdr[:segHeaderSize]) != segMagic {
		return f, pos, bad(0, "bad segment header")
	}
	off := segHeaderSize
	var payload []byte
	for off < size {
		if size-off < recHeaderSize {
			return f, pos, bad(off, "truncated record header")
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return f, pos, fmt.Errorf("spool: read segment: %w", err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if n == 0 && binary.LittleEndian.Uint64(hdr[8:16]) == 0 {
			return f, pos, bad(off, "zeroed record header")
		}
		if n > maxPayloadLimit || n > size-off-recHeaderSize {
			return f, pos, bad(off, fmt.Sprintf("truncated record: length %d, %d bytes left", n, size-off-recHeaderSize))
		}
		if int64(cap(payload)) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return f, pos, fmt.Errorf("spool: read segment: %w", err)
		}
		if recordCRC(hdr[8:16], payload) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return f, pos, bad(off, "checksum mismatch")
		}
		if seq := binary.LittleEndian.Uint64(hdr[8:16]); seq != seg.last+1 {
			return f, pos, bad(off, fmt.Sprintf("sequence %d where %d was expected", seq, seg.last+1))
		}
		seg.last++
		if seg.last == acked+1 {
			pos = position{seg: seg.first, off: off, seq: seg.last}
		}
		off += recHeaderSize + n
	}
	seg.size = off
	return f, pos, nil
}
