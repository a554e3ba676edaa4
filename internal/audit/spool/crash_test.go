package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashDirEnv = "KACCESS_SPOOL_CRASH_DIR"

// crashChild appends records forever, printing each sequence number Append returned, until
// the parent kills it.
func crashChild(dir string) {
	cfg := testConfig(dir)
	cfg.SegmentBytes = 64 << 10
	cfg.MaxBytes = 1 << 30
	s, err := Open(cfg)
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(2)
	}
	for next := uint64(1); ; next++ {
		seq, err := s.Append(payloadFor(next))
		if err != nil || seq != next {
			fmt.Println("append error:", seq, err)
			os.Exit(2)
		}
		fmt.Printf("seq %d\n", seq) // os.Stdout is unbuffered: one write(2) per line
	}
}

func TestCrashKeepsEveryReturnedAppend(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for round, killAfter := range []int{3000, 12000} {
		t.Run(strconv.Itoa(killAfter), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsEveryReturnedAppend$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var printed uint64
			lines := 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				v, ok := strings.CutPrefix(line, "seq ")
				if !ok {
					t.Errorf("child: %s", line)
					continue
				}
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatalf("child printed %q", line)
				}
				printed = n
				if lines++; lines == killAfter {
					// SIGKILL mid-stream: the child is appending while it dies.
					if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
				}
			}
			err = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die of SIGKILL: %v; stderr: %s", err, stderr.String())
			}
			if printed < uint64(killAfter) {
				t.Fatalf("child printed up to %d, want at least %d", printed, killAfter)
			}

			cfg := testConfig(dir)
			cfg.SegmentBytes = 64 << 10
			cfg.MaxBytes = 1 << 30
			s := mustOpen(t, cfg)
			st := s.Stats()
			t.Logf("round %d: child printed seq %d; reopened spool holds %d records in %d segments, torn tail: %+v",
				round, printed, st.LastSeq, st.Segments, s.Recovered())
			if st.LastSeq < printed {
				t.Fatalf("spool holds records up to %d, child had been given %d", st.LastSeq, printed)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var next uint64 = 1
			for next <= st.LastSeq {
				b, err := s.Reader().Next(ctx, 5000)
				if err != nil {
					t.Fatal(err)
				}
				checkBatch(t, b) // every payload intact
				if b.FirstSeq != next {
					t.Fatalf("batch starts at %d, want %d", b.FirstSeq, next)
				}
				next = b.LastSeq + 1
				if err := s.Reader().Ack(b.LastSeq); err != nil {
					t.Fatal(err)
				}
			}
			if seq, err := s.Append(payloadFor(next)); err != nil || seq != next {
				t.Fatalf("Append after crash = %d, %v; want %d", seq, err, next)
			}
		})
	}
}
