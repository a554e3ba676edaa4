package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// On-disk format (all integers little-endian).
//
// Segment file "<first seq, 20 decimal digits>.seg":
//
//	header  8 bytes  magic "KASPOOL1"
//	record* each:
//	        u32 payload length
//	        u32 CRC-32C (Castagnoli) over the 8 seq bytes followed by the payload
//	        u64 sequence number (first record = the number in the file name, then +1 each)
//	        payload
//
// Checkpoint file "checkpoint" (32 bytes, replaced atomically by rename):
//
//	magic "KCP1" | u64 acked seq | u64 in-flight first | u64 in-flight last | u32 CRC-32C of the preceding 28 bytes
//
// Instance file "instance": 32 hex characters and a newline, created once.
const (
	segMagic       = "KASPOOL1"
	segHeaderSize  = int64(len(segMagic))
	recHeaderSize  = 16
	segSuffix      = ".seg"
	checkpointName = "checkpoint"
	instanceName   = "instance"
	lockName       = "lock"
	cpMagic        = "KCP1"
	cpSize         = 32
	// maxPayloadLimit bounds the length field accepted when scanning, whatever the config.
	maxPayloadLimit = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append and AppendSync when the record would take the spool over
// Config.MaxBytes. Nothing already spooled is lost; appends succeed again once acks free space.
var ErrFull = errors.New("spool: full")

// ErrTooLarge is returned when a payload cannot fit in one segment.
var ErrTooLarge = errors.New("spool: record larger than a segment")

// ErrClosed is returned by operations on a closed spool.
var ErrClosed = errors.New("spool: closed")

// CorruptError reports damaged data that recovery must not skip silently: a bad record in a
// segment other than the last, a missing range of sequence numbers, or a bad checkpoint.
type CorruptError struct {
	File   string
	Offset int64
	Seq    uint64 // the sequence number expected at Offset, 0 if not applicable
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool: corrupt data in %s at offset %d (expected seq %d): %s", e.File, e.Offset, e.Seq, e.Reason)
}

// TornTail describes a torn or corrupt tail found in the last segment at Open and cut off.
type TornTail struct {
	File         string
	Offset       int64 // the segment now ends here, after its last good record
	DroppedBytes int64
	Reason       string
}

func segName(first uint64) string {
	return fmt.Sprintf("%020d%s", first, segSuffix)
}

func parseSegName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(base) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 10, 64)
	return n, err == nil
}

// putRecordHeader fills buf[:recHeaderSize] for a record whose payload is already at
// buf[recHeaderSize:].
func putRecordHeader(buf []byte, seq uint64) {
	binary.LittleEndian.PutUint32(buf[0:4], uint32(len(buf)-recHeaderSize))
	binary.LittleEndian.PutUint64(buf[8:16], seq)
	binary.LittleEndian.PutUint32(buf[4:8], crc32.Checksum(buf[8:], castagnoli))
}

func recordCRC(seqBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(seqBytes, castagnoli), castagnoli, payload)
}

type checkpoint struct {
	acked         uint64
	inflightFirst uint64 // 0: no batch in flight
	inflightLast  uint64
}

func (c checkpoint) encode() []byte {
	b := make([]byte, cpSize)
	copy(b, cpMagic)
	binary.LittleEndian.PutUint64(b[4:], c.acked)
	binary.LittleEndian.PutUint64(b[12:], c.inflightFirst)
	binary.LittleEndian.PutUint64(b[20:], c.inflightLast)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

func readCheckpoint(dir string) (checkpoint, error) {
	path := filepath.Join(dir, checkpointName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return checkpoint{}, nil
	}
	if err != nil {
		return checkpoint{}, fmt.Errorf("spool: read checkpoint: %w", err)
	}
	if len(b) != cpSize || string(b[:4]) != cpMagic ||
		binary.LittleEndian.Uint32(b[28:]) != crc32.Checksum(b[:28], castagnoli) {
		return checkpoint{}, &CorruptError{File: path, Reason: "bad checkpoint"}
	}
	c := checkpoint{
		acked:         binary.LittleEndian.Uint64(b[4:]),
		inflightFirst: binary.LittleEndian.Uint64(b[12:]),
		inflightLast:  binary.LittleEndian.Uint64(b[20:]),
	}
	if c.inflightFirst != 0 && (c.inflightFirst != c.acked+1 || c.inflightLast < c.inflightFirst) {
		return checkpoint{}, &CorruptError{File: path, Reason: "inconsistent in-flight batch"}
	}
	return c, nil
}

// writeFileAtomic writes data to dir/name through a temporary file, fsync, rename and a
// directory fsync, so a crash leaves either the old or the new content.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
