package cli

import (
	"strings"
	"testing"
)

func TestOnlyServerPicksTheSingleSession(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if _, err := s.OnlyServer(); err == nil || !strings.Contains(err.Error(), "kaccess login") {
		t.Fatalf("no session: %v", err)
	}
	if err := s.Save(&Session{Server: "https://gw.example.com:6443", Username: "alice", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.OnlyServer(); err != nil || got != "https://gw.example.com:6443" {
		t.Fatalf("one session: %q %v", got, err)
	}
	if err := s.Save(&Session{Server: "https://other.example.com", Username: "alice", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OnlyServer(); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("two sessions: %v", err)
	}
}
