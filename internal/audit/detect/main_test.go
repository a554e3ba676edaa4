package detect

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) {
	code := testenv.Run(m)
	closeStores()
	os.Exit(code)
}

// The two data sets are generated and stored once per test binary: every detection test
// reads them, none writes.
var (
	storesOnce sync.Once
	storesErr  error
	planted    *dataSet
	control    *dataSet
	opened     []*chdb.Store
	openedDirs []string
)

type dataSet struct {
	*scenario
	store *chdb.Store
}

// dataSets returns the planted and the clean data set, each in its own embedded store.
func dataSets(t testing.TB) (withPlants, clean *dataSet) {
	t.Helper()
	lib, helper := testenv.ChDB(t)
	storesOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, p := range []struct {
			planted bool
			dst     **dataSet
		}{{true, &planted}, {false, &control}} {
			s, err := openStore(ctx, lib, helper)
			if err != nil {
				storesErr = err
				return
			}
			sc := newScenario(p.planted)
			if err := s.Write(ctx, fmt.Sprintf("detect-planted-%v", p.planted), sc.events); err != nil {
				storesErr = fmt.Errorf("store the generated events: %w", err)
				return
			}
			*p.dst = &dataSet{scenario: sc, store: s}
		}
	})
	if storesErr != nil {
		t.Fatal(storesErr)
	}
	return planted, control
}

func openStore(ctx context.Context, lib, helper string) (*chdb.Store, error) {
	dir, err := os.MkdirTemp("", "kaccess-detect-")
	if err != nil {
		return nil, err
	}
	openedDirs = append(openedDirs, dir)
	s, err := chdb.Open(ctx, chdb.Config{Dir: dir, Library: lib, Helper: helper})
	if err != nil {
		return nil, err
	}
	opened = append(opened, s)
	return s, nil
}

func closeStores() {
	for _, s := range opened {
		s.Close()
	}
	for _, d := range openedDirs {
		os.RemoveAll(d)
	}
}
