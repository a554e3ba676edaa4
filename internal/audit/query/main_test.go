package query

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// openStore opens an embedded store on a fresh directory holding events.
func openStore(t *testing.T, events ...[]*event.Event) *chdb.Store {
	t.Helper()
	lib, helper := testenv.ChDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i, batch := range events {
		write(t, s, batch, i)
	}
	return s
}

func write(t *testing.T, s *chdb.Store, batch []*event.Event, n int) {
	t.Helper()
	if err := s.Write(context.Background(), t.Name()+"-"+time.Now().Format(time.RFC3339Nano)+"-"+string(rune('a'+n%26)), batch); err != nil {
		t.Fatal(err)
	}
}

func ids(events []*event.Event) map[string]int {
	m := map[string]int{}
	for _, e := range events {
		m[e.EventID]++
	}
	return m
}
