// Package revocation keeps revoked session ids where every gateway replica sees them: one
// ConfigMap in the gateway's namespace, watched by each replica. A logout at one replica ends the
// session at all of them within the watch's delay (typically well under a second).
package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// ConfigMapStore implements session.RevocationStore on a ConfigMap whose keys are session ids
// and whose values are the time until which the id stays revoked (its token's expiry).
type ConfigMapStore struct {
	client    kubernetes.Interface
	namespace string
	name      string
	log       *slog.Logger
	now       func() time.Time

	mu      sync.RWMutex
	revoked map[string]time.Time

	loaded   atomic.Bool
	loadedCh chan struct{} // closed once loaded
}

// NewConfigMapStore starts keeping the mirror of the ConfigMap (creating it if it is
// missing) until ctx ends, and waits up to loadWait for the current revocations. A replica
// that starts while its API server is out of reach still starts: it keeps trying, and until
// the list is loaded it refuses every session (Loaded is false) rather than trusting one that
// may have been revoked.
func NewConfigMapStore(ctx context.Context, client kubernetes.Interface, namespace, name string, log *slog.Logger) (*ConfigMapStore, error) {
	s := &ConfigMapStore{client: client, namespace: namespace, name: name, log: log, now: time.Now,
		revoked: map[string]time.Time{}, loadedCh: make(chan struct{})}
	go s.run(ctx)
	select {
	case <-s.loadedCh:
	case <-time.After(loadWait):
		log.Warn("revocations not loaded yet: sessions are refused until the API server answers",
			"configmap", namespace+"/"+name)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s, nil
}

// loadWait bounds how long NewConfigMapStore waits for the list before it returns unloaded.
var loadWait = 5 * time.Second

// Loaded reports whether the ConfigMap's revocations have been loaded once.
func (s *ConfigMapStore) Loaded() bool { return s.loaded.Load() }

// run creates the ConfigMap (retrying while the API server is unreachable), then watches it.
func (s *ConfigMapStore) run(ctx context.Context) {
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	backoff := 100 * time.Millisecond
	for {
		_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kaccess"}}}, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			break
		}
		s.log.Warn("revocations ConfigMap could not be created; retrying", "configmap", s.namespace+"/"+s.name,
			"error", err.Error(), "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	lw := cache.NewListWatchFromClient(s.client.CoreV1().RESTClient(), "configmaps", s.namespace,
		fields.OneTermEqualSelector("metadata.name", s.name))
	informer := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 10*time.Minute, cache.Indexers{})
	load := func(obj any) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			s.replace(cm.Data)
		}
	}
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    load,
		UpdateFunc: func(_, obj any) { load(obj) },
	})
	go informer.Run(ctx.Done())
	if cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		s.loaded.Store(true)
		close(s.loadedCh)
		s.log.Info("revocations loaded", "configmap", s.namespace+"/"+s.name)
	}
}

// replace takes the ConfigMap's content as the set of revocations. Entries this replica made
// that the ConfigMap does not show yet are kept: the watch may lag our own write.
func (s *ConfigMapStore) replace(data map[string]string) {
	next := make(map[string]time.Time, len(data))
	for sid, until := range data {
		t, err := time.Parse(time.RFC3339, until)
		if err != nil {
			s.log.Warn("ignoring a malformed revocation entry", "configmap", s.namespace+"/"+s.name, "session_id", sid)
			continue
		}
		next[sid] = t
	}
	s.mu.Lock()
	now := s.now()
	for sid, until := range s.revoked {
		if _, seen := next[sid]; !seen && until.After(now) {
			next[sid] = until
		}
	}
	s.revoked = next
	s.mu.Unlock()
}

// IsRevoked reports whether sessionID is revoked and its revocation still matters.
func (s *ConfigMapStore) IsRevoked(sessionID string) bool {
	s.mu.RLock()
	until, ok := s.revoked[sessionID]
	s.mu.RUnlock()
	return ok && s.now().Before(until)
}

// Revoke records sessionID until the given time in the ConfigMap, dropping entries that have
// expired so it stays small. It fails (and the caller reports it) when the API server cannot
// take the write: a logout that did not reach the other replicas must not look done.
func (s *ConfigMapStore) Revoke(ctx context.Context, sessionID string, until time.Time) error {
	if sessionID == "" {
		return errors.New("revoke: empty session id")
	}
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, s.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := s.now()
		data := make(map[string]string, len(cm.Data)+1)
		for sid, v := range cm.Data {
			if t, err := time.Parse(time.RFC3339, v); err == nil && t.After(now) {
				data[sid] = v
			}
		}
		data[sessionID] = until.UTC().Format(time.RFC3339Nano)
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("record the revocation in ConfigMap %s/%s: %w", s.namespace, s.name, err)
	}
	s.mu.Lock()
	s.revoked[sessionID] = until
	s.mu.Unlock()
	return nil
}
