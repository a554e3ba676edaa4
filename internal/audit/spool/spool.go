// Package spool is the durable on-disk queue between audit capture and the audit writer.
//
// Records are appended to checksummed, append-only segment files with a per-gateway sequence
// number. Append hands the record to the OS (write(2)) before returning, so a gateway crash
// loses nothing; a background group commit fsyncs at most Config.SyncInterval later, and
// AppendSync waits for the fsync covering its record. One Reader ships the records in
// batches with a deterministic deduplication token and acknowledges them; a segment is
// deleted once every record in it is acknowledged.
package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a Spool.
type Config struct {
	// Dir holds the segments, the checkpoint and the instance id. Created if missing.
	Dir string
	// SegmentBytes is the size at which a segment rolls over. Default 64 MiB.
	SegmentBytes int64
	// MaxBytes caps the bytes on disk of all segments together. Default 1 GiB.
	MaxBytes int64
	// SyncInterval is the group commit interval: a record handed to Append is fsynced at
	// most this much later. Default 100 ms.
	SyncInterval time.Duration
	// Logger receives recovery reports. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.SegmentBytes == 0 {
		c.SegmentBytes = 64 << 20
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir: required"))
	}
	if c.SegmentBytes < segHeaderSize+recHeaderSize+1 {
		errs = append(errs, fmt.Errorf("segment_bytes: %d is too small", c.SegmentBytes))
	}
	if c.MaxBytes < c.SegmentBytes {
		errs = append(errs, fmt.Errorf("max_bytes: %d is below segment_bytes %d", c.MaxBytes, c.SegmentBytes))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, errors.New("sync_interval: negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("spool: config: %w", errors.Join(errs...))
	}
	return nil
}

// Stats is a snapshot of the spool's counters and gauges.
type Stats struct {
	BytesOnDisk        int64  // all segments
	Segments           int    // segment files
	LastSeq            uint64 // last sequence number appended
	SyncedSeq          uint64 // last sequence number covered by an fsync
	AckedSeq           uint64 // last sequence number acknowledged by the reader
	RecordsPending     uint64 // appended and not yet acknowledged
	Appends            uint64 // successful appends since Open
	Fsyncs             uint64 // fsyncs of segment data since Open
	FullRejections     uint64 // appends refused with ErrFull
	TornTailRecoveries uint64 // torn tails cut off at Open
	TornBytesDropped   int64
}

type segment struct {
	first uint64 // sequence number in the file name
	last  uint64 // last record's seq; first-1 when empty
	size  int64  // bytes of valid data, header included
	path  string
}

// Spool is a durable, size-capped, append-only record queue. Append and AppendSync are safe
// for concurrent use; records are read by the single Reader.
type Spool struct {
	cfg        Config
	id         string
	maxPayload int64
	lock       *os.File
	reader     *Reader
	recovered  *TornTail

	syncReq chan struct{}
	stop    chan struct{}
	done    chan struct{}

	mu        sync.Mutex
	cond      *sync.Cond // signalled when syncedSeq moves or err is set
	notify    chan struct{}
	segs      []*segment // ordered; the last one is active
	active    *os.File
	buf       []byte
	nextSeq   uint64
	syncedSeq uint64
	ackedSeq  uint64
	diskBytes int64
	err       error // sticky: a failed fsync leaves the spool unusable
	closing   bool  // Close started: no new appends
	closed    bool  // final fsync done
	stats     Stats

	// fsFree is what the spool's filesystem has left for it (statfs, refreshed by the group
	// commit loop at most every fsCheckInterval; 0 right after a write ran out of space; -1
	// when the filesystem does not say). The cap alone does not stop a shared or small disk
	// from filling first.
	fsFree      atomic.Int64
	fsCheckedAt time.Time // syncLoop's own
}

// fsCheckInterval bounds how often the spool asks its filesystem for its free space.
const fsCheckInterval = 100 * time.Millisecond

// Open opens or creates the spool in cfg.Dir, recovering from a torn tail in the last
// segment (reported through the logger, Stats and Recovered) and continuing the sequence.
// Damage anywhere else is returned as a *CorruptError.
func Open(cfg Config) (*Spool, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create dir: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		cfg:        cfg,
		maxPayload: min(cfg.SegmentBytes-segHeaderSize-recHeaderSize, maxPayloadLimit),
		lock:       lock,
		syncReq:    make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		notify:     make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	s.checkFS(time.Now())
	if err := s.open(); err != nil {
		if s.active != nil {
			s.active.Close()
		}
		lock.Close()
		return nil, err
	}
	go s.syncLoop()
	return s, nil
}

func (s *Spool) open() error {
	id, err := loadInstanceID(s.cfg.Dir)
	if err != nil {
		return err
	}
	s.id = id
	cp, err := readCheckpoint(s.cfg.Dir)
	if err != nil {
		return err
	}
	ackPos, err := s.recover(cp.acked)
	if err != nil {
		return err
	}
	s.ackedSeq = cp.acked
	s.syncedSeq = s.nextSeq - 1
	s.reader = newReader(s, cp, ackPos)
	s.stats.TornTailRecoveries, s.stats.TornBytesDropped = 0, 0
	if s.recovered != nil {
		s.stats.TornTailRecoveries = 1
		s.stats.TornBytesDropped = s.recovered.DroppedBytes
	}
	return nil
}

// ID is the spool's instance id, created with the spool directory and kept across restarts.
// It is part of every batch's dedup token.
func (s *Spool) ID() string { return s.id }

// Recovered reports the torn tail cut off at Open, or nil.
func (s *Spool) Recovered() *TornTail { return s.recovered }

// Free returns the bytes the spool can still take: what the cap allows, or what its
// filesystem has left if that is less. Capture checks it before letting a request through, so
// a request is refused up front (503) rather than after it reached the API server, also when
// the disk fills before the cap does.
func (s *Spool) Free() int64 {
	s.mu.Lock()
	free := s.cfg.MaxBytes - s.diskBytes
	// A fully acknowledged active segment is reclaimed by the next append (reclaimLocked):
	// count it as free, or a spool refusing every append would never get to reclaim it.
	if seg := s.segs[len(s.segs)-1]; seg.last >= seg.first && s.ackedSeq >= seg.last {
		free += seg.size - segHeaderSize
	}
	s.mu.Unlock()
	if fs := s.fsFree.Load(); fs >= 0 {
		free = min(free, fs)
	}
	return free
}

// checkFS refreshes fsFree from the filesystem's count of blocks available to this process.
func (s *Spool) checkFS(now time.Time) {
	s.fsCheckedAt = now
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.Dir, &st); err != nil || st.Blocks == 0 {
		s.fsFree.Store(-1)
		return
	}
	s.fsFree.Store(int64(st.Bavail) * int64(st.Bsize))
}

// noteWriteErr marks the filesystem as full when a write ran out of space, so requests are
// refused up front at once instead of each reaching the API server and losing its response.
func (s *Spool) noteWriteErr(err error) {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		s.fsFree.Store(0)
	}
}

// Reader returns the spool's single reader.
func (s *Spool) Reader() *Reader { return s.reader }

// Append writes payload as the next record and returns its sequence number. The record is
// in the OS when Append returns and fsynced by group commit within Config.SyncInterval.
// Returns ErrFull when the spool is at its size cap.
func (s *Spool) Append(payload []byte) (uint64, error) {
	s.mu.Lock()
	seq, err := s.appendLocked(payload)
	s.mu.Unlock()
	return seq, err
}

// AppendSync is Append that returns only after the fsync covering the record. Concurrent
// callers share fsyncs.
func (s *Spool) AppendSync(payload []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, err := s.appendLocked(payload)
	if err != nil {
		return 0, err
	}
	return seq, s.waitSyncedLocked(seq)
}

// Sync fsyncs everything appended so far (sharing the fsync with concurrent callers).
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitSyncedLocked(s.nextSeq - 1)
}

func (s *Spool) waitSyncedLocked(seq uint64) error {
	for s.syncedSeq < seq && s.err == nil {
		if s.closed {
			return ErrClosed
		}
		select {
		case s.syncReq <- struct{}{}:
		default:
		}
		s.cond.Wait()
	}
	return s.err
}

func (s *Spool) appendLocked(payload []byte) (uint64, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closing {
		return 0, ErrClosed
	}
	if int64(len(payload)) > s.maxPayload {
		return 0, ErrTooLarge
	}
	n := int64(recHeaderSize + len(payload))
	roll := s.segs[len(s.segs)-1].size+n > s.cfg.SegmentBytes
	need := n
	if roll {
		need += segHeaderSize
	}
	if s.diskBytes+need > s.cfg.MaxBytes {
		if !s.reclaimLocked() || s.diskBytes+n > s.cfg.MaxBytes {
			s.stats.FullRejections++
			return 0, ErrFull
		}
		roll = false // reclaim left a fresh, empty active segment
	}
	if roll {
		if err := s.rollLocked(); err != nil {
			return 0, err
		}
	}
	seg := s.segs[len(s.segs)-1]
	seq := s.nextSeq
	s.buf = append(s.buf[:0], make([]byte, recHeaderSize)...)
	s.buf = append(s.buf, payload...)
	putRecordHeader(s.buf, seq)
	if _, err := s.active.WriteAt(s.buf, seg.size); err != nil {
		s.noteWriteErr(err)
		// Cut off whatever part of the record reached the file; the next record overwrites it.
		if terr := s.active.Truncate(seg.size); terr != nil {
			s.failLocked(fmt.Errorf("spool: write failed and could not be undone: %w", errors.Join(err, terr)))
		}
		return 0, fmt.Errorf("spool: write: %w", err)
	}
	if cap(s.buf) > 1<<20 {
		s.buf = nil // do not pin one huge payload's buffer
	}
	seg.size += n
	seg.last = seq
	s.diskBytes += n
	s.nextSeq++
	s.stats.Appends++
	return seq, nil
}

// reclaimLocked frees the active segment when every record in it is acknowledged, so a spool
// whose whole content is acked can take new records even when the cap is below two segments.
func (s *Spool) reclaimLocked() bool {
	seg := s.segs[len(s.segs)-1]
	if seg.last < seg.first || s.ackedSeq < seg.last {
		return false
	}
	if err := s.rollLocked(); err != nil {
		return false
	}
	s.deleteAckedLocked()
	return true
}

// rollLocked makes everything in the active segment durable and starts a new segment named
// after the next sequence number. If the new segment cannot be created, the old one stays
// active and the next append tries again.
func (s *Spool) rollLocked() error {
	if s.active != nil {
		old := s.segs[len(s.segs)-1]
		if err := s.active.Truncate(old.size); err != nil {
			return fmt.Errorf("spool: roll: %w", err)
		}
		if err := s.active.Sync(); err != nil {
			return s.failLocked(fmt.Errorf("spool: fsync: %w", err))
		}
		s.stats.Fsyncs++
		s.markSyncedLocked(s.nextSeq - 1)
	}
	seg := &segment{first: s.nextSeq, last: s.nextSeq - 1, size: segHeaderSize,
		path: filepath.Join(s.cfg.Dir, segName(s.nextSeq))}
	f, err := os.OpenFile(seg.path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		s.noteWriteErr(err)
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
		s.noteWriteErr(err)
		f.Close()
		os.Remove(seg.path)
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		f.Close()
		os.Remove(seg.path)
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if s.active != nil {
		s.active.Close() // a concurrent group commit fsync still completes on it
	}
	s.active = f
	s.segs = append(s.segs, seg)
	s.diskBytes += segHeaderSize
	return nil
}

// deleteAckedLocked removes every segment but the active one whose records are all acked.
func (s *Spool) deleteAckedLocked() {
	for len(s.segs) > 1 && s.segs[0].last <= s.ackedSeq {
		seg := s.segs[0]
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cfg.Logger.Warn("spool segment could not be removed", "file", seg.path, "error", err)
			return
		}
		s.diskBytes -= seg.size
		s.segs = s.segs[1:]
	}
}

// failLocked makes err sticky: after a failed fsync the kernel may have dropped the dirty
// pages, so nothing written since the last good fsync can be trusted to be durable. Waiters
// and the reader are woken to see it.
func (s *Spool) failLocked(err error) error {
	s.err = err
	s.cfg.Logger.Error("spool failed; appends refused", "error", err)
	s.cond.Broadcast()
	close(s.notify)
	s.notify = make(chan struct{})
	return err
}

func (s *Spool) markSyncedLocked(seq uint64) {
	if seq > s.syncedSeq {
		s.syncedSeq = seq
		s.cond.Broadcast()
		close(s.notify)
		s.notify = make(chan struct{})
	}
}

func (s *Spool) syncLoop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			if now.Sub(s.fsCheckedAt) >= fsCheckInterval {
				s.checkFS(now)
			}
		case <-s.syncReq:
		}
		s.syncOnce()
	}
}

// syncOnce is one group commit: it fsyncs the active segment without holding the lock, so
// appends continue meanwhile, and marks everything written before it as synced.
func (s *Spool) syncOnce() {
	s.mu.Lock()
	target := s.nextSeq - 1
	if target <= s.syncedSeq || s.err != nil || s.active == nil {
		s.mu.Unlock()
		return
	}
	f := s.active
	s.mu.Unlock()
	err := f.Sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.stats.Fsyncs++
		s.markSyncedLocked(target)
	case errors.Is(err, os.ErrClosed) && s.syncedSeq >= target:
		// A roll closed the file after fsyncing it itself.
	default:
		s.failLocked(fmt.Errorf("spool: fsync: %w", err))
	}
}

// Stats returns a snapshot of the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.BytesOnDisk = s.diskBytes
	st.Segments = len(s.segs)
	st.LastSeq = s.nextSeq - 1
	st.SyncedSeq = s.syncedSeq
	st.AckedSeq = s.ackedSeq
	if st.LastSeq > s.ackedSeq {
		st.RecordsPending = st.LastSeq - s.ackedSeq
	}
	return st
}

// Close refuses further appends, fsyncs what was appended (releasing AppendSync callers) and
// closes the spool. Pending records stay on disk for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.syncOnce()
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	close(s.notify) // wakes a reader blocked in Next
	s.notify = make(chan struct{})
	err := s.err
	if s.active != nil {
		if cerr := s.active.Close(); err == nil {
			err = cerr
		}
		s.active = nil
	}
	s.mu.Unlock()
	s.reader.closeFile() // after s.mu: the reader takes r.mu before s.mu
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: lock %s (another process has this spool open?): %w", dir, err)
	}
	return f, nil
}

func loadInstanceID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, instanceName))
	if err == nil {
		id := strings.TrimSpace(string(b))
		if _, herr := hex.DecodeString(id); herr != nil || len(id) != 32 {
			return "", &CorruptError{File: filepath.Join(dir, instanceName), Reason: "bad instance id"}
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("spool: read instance id: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("spool: instance id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if err := writeFileAtomic(dir, instanceName, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("spool: write instance id: %w", err)
	}
	return id, nil
}
