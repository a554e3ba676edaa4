package event

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kaccess/kaccess/internal/authn"
)

func TestDecisionFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code int
		want Decision
	}{
		{200, DecisionAllow}, {101, DecisionAllow}, {201, DecisionAllow}, {404, DecisionAllow}, {409, DecisionAllow},
		{429, DecisionAllow}, {401, DecisionDeny}, {403, DecisionDeny}, {500, DecisionError}, {502, DecisionError},
		{503, DecisionError}, {0, DecisionError},
	}
	for _, tt := range tests {
		if got := DecisionFor(tt.code); got != tt.want {
			t.Errorf("DecisionFor(%d) = %s, want %s", tt.code, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 14, 0, 0, 123456789, time.FixedZone("X", 7200))
	e := New(KindLogin, now)
	if !e.Time.Equal(now.Truncate(time.Microsecond)) || e.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want UTC microseconds of %v", e.Time, now)
	}
	id, err := uuid.Parse(e.EventID)
	if err != nil || id.Version() != 7 {
		t.Errorf("EventID %q is not a UUIDv7 (%v)", e.EventID, err)
	}
	if e.Kind != KindLogin || e.Stage != StageComplete {
		t.Errorf("kind %s stage %s", e.Kind, e.Stage)
	}
	if New(KindLogin, now).EventID == e.EventID {
		t.Error("two events share an id")
	}
}

func TestSetIdentityNeverRecordsTheSessionID(t *testing.T) {
	t.Parallel()
	id := &authn.Identity{User: "alice", UID: "u1", Groups: []string{"g1", "g2"}, Source: "ldap:corp", SessionID: "s3cr3t-session-id"}
	var e Event
	e.SetIdentity(id)
	if e.User != "alice" || e.UID != "u1" || e.Source != "ldap:corp" || !reflect.DeepEqual(e.Groups, id.Groups) {
		t.Errorf("identity not copied: %+v", e)
	}
	if len(e.SessionIDHash) != 16 || e.SessionIDHash != HashSessionID(id.SessionID) || strings.Contains(e.SessionIDHash, "s3cr3t") {
		t.Errorf("SessionIDHash = %q", e.SessionIDHash)
	}
	e.Groups[0] = "changed"
	if id.Groups[0] != "g1" {
		t.Error("event shares the identity's group slice")
	}
	if HashSessionID("") != "" {
		t.Error("empty session id hashed")
	}
	var anon Event
	anon.SetIdentity(nil)
	if !reflect.DeepEqual(anon, Event{}) {
		t.Errorf("nil identity set fields: %+v", anon)
	}
}

func TestSetRequestInfoAndResponse(t *testing.T) {
	t.Parallel()
	var e Event
	e.SetRequestInfo(&genericrequest.RequestInfo{IsResourceRequest: true, Verb: "create", APIGroup: "apps", APIVersion: "v1",
		Resource: "deployments", Subresource: "scale", Namespace: "shop", Name: "web"})
	e.SetResponse(403)
	want := Event{Verb: "create", APIGroup: "apps", APIVersion: "v1", Resource: "deployments", Subresource: "scale",
		Namespace: "shop", Name: "web", ResponseCode: 403, Decision: DecisionDeny}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("got %+v, want %+v", e, want)
	}
}

func TestLevelAtLeast(t *testing.T) {
	t.Parallel()
	order := []Level{LevelNone, LevelMetadata, LevelRequest, LevelRequestResponse}
	for i, a := range order {
		for j, b := range order {
			if a.AtLeast(b) != (i >= j) {
				t.Errorf("%s.AtLeast(%s) = %v", a, b, a.AtLeast(b))
			}
		}
	}
	if Level("Bogus").AtLeast(LevelNone) {
		t.Error("unknown level ranks above None")
	}
}
