package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/audit/ship"
)

// errStoreNotOpen is what searches get until the shipper has reached the audit store.
var errStoreNotOpen = errors.New("the audit store is not reachable yet; records are kept in the spool meanwhile, try again shortly")

// sharedStore hands the store the shipper opened to the query side as well: the embedded
// engine can be opened by one process only, and a server needs no second pool.
type sharedStore struct {
	open   StoreOpener
	store  atomic.Pointer[ship.Sink]
	opened chan struct{} // closed once store is set
	once   sync.Once
}

func newSharedStore(open StoreOpener) *sharedStore {
	return &sharedStore{open: open, opened: make(chan struct{})}
}

// Open is the shipper's opener; it keeps what it opened for queries.
func (s *sharedStore) Open(ctx context.Context) (ship.Sink, error) {
	sink, err := s.open(ctx)
	if err == nil {
		s.store.Store(&sink)
		s.once.Do(func() { close(s.opened) })
	}
	return sink, err
}

// storeWait is how long a query waits for a store that is being opened (the gateway just
// started) before it is answered with errStoreNotOpen.
const storeWait = 10 * time.Second

// QueryJSON implements query.Querier and detect.Querier over the shipper's store.
func (s *sharedStore) QueryJSON(ctx context.Context, sql string, params map[string]string, each func(row []byte) error) error {
	sink, err := s.wait(ctx)
	if err != nil {
		return err
	}
	q, ok := sink.(query.Querier)
	if !ok {
		return errors.New("this audit store cannot be searched")
	}
	return q.QueryJSON(ctx, sql, params, each)
}

// Exec runs a statement without rows on the shipper's store (findings are written so).
func (s *sharedStore) Exec(ctx context.Context, sql string) error {
	sink, err := s.wait(ctx)
	if err != nil {
		return err
	}
	x, ok := sink.(interface {
		Exec(ctx context.Context, sql string) error
	})
	if !ok {
		return errors.New("this audit store cannot store findings")
	}
	return x.Exec(ctx, sql)
}

// wait returns the store, waiting up to storeWait for one being opened.
func (s *sharedStore) wait(ctx context.Context) (ship.Sink, error) {
	p := s.store.Load()
	if p == nil {
		t := time.NewTimer(storeWait)
		defer t.Stop()
		select {
		case <-s.opened:
			p = s.store.Load()
		case <-t.C:
			return nil, errStoreNotOpen
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return *p, nil
}

// detections adapts the detection library to the API.
type detections struct{ q detect.Querier }

func (d detections) Detections() []apiserver.DetectionInfo {
	var out []apiserver.DetectionInfo
	for _, x := range detect.Library() {
		i := apiserver.DetectionInfo{Name: x.Name, Title: x.Title, Description: x.Description, Severity: string(x.Severity)}
		if x.Technique != nil {
			i.TechniqueID, i.TechniqueName = x.Technique.ID, x.Technique.Name
		}
		out = append(out, i)
	}
	return out
}

func (d detections) RunDetection(ctx context.Context, name string, from, to time.Time) ([]apiserver.Finding, error) {
	if !slices.Contains(detect.Names(), name) {
		return nil, apiserver.ErrUnknownDetection
	}
	found, err := detect.Run(ctx, d.q, name, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]apiserver.Finding, 0, len(found))
	for _, f := range found {
		out = append(out, apiserver.Finding{
			Detection: f.Detection, Severity: string(f.Severity), Cluster: f.Cluster, Subject: f.Subject,
			Summary: f.Summary, FirstSeen: f.FirstSeen, LastSeen: f.LastSeen, Count: int64(f.Count), EventIDs: f.EventIDs,
		})
	}
	return out, nil
}
