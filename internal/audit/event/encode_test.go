package event

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// typicalRequest is a request event as the proxy records it, without bodies.
func typicalRequest() *Event {
	return &Event{
		Time:            time.Date(2026, 11, 25, 13, 30, 1, 123456000, time.UTC),
		EventID:         "0193a1f2-7c4e-7b21-9d3a-2f1e0c9b8a76",
		Kind:            KindRequest,
		Stage:           StageComplete,
		Cluster:         "prod-eu-1",
		GatewayInstance: "kaccess-7d9f8c-abcde",
		RequestID:       "0193a1f2-7c4e-7b21-9d3a-2f1e0c9b8a75",
		User:            "alice@example.com",
		UID:             "5f0c1d2e-1111-2222-3333-444455556666",
		Groups:          []string{"ad:k8s-devs", "ad:oncall", "system:authenticated"},
		Source:          "ldap:corp",
		SessionIDHash:   "9f86d081884c7d65",
		GrantIDs:        []string{"grant-42"},
		SourceIP:        "10.1.2.3",
		UserAgent:       "kubectl/v1.37.2 (linux/amd64) kubernetes/abcdef0",
		Verb:            "list",
		APIVersion:      "v1",
		Resource:        "pods",
		Namespace:       "payments",
		RequestURI:      "/api/v1/namespaces/payments/pods?limit=500",
		Method:          "GET",
		ResponseCode:    200,
		Decision:        DecisionAllow,
		Latency:         12345678 * time.Nanosecond,
		BytesOut:        48213,
		Level:           LevelMetadata,
	}
}

func fullEvent() *Event {
	e := typicalRequest()
	e.Stage = StageEnded
	e.ImpersonatedUser = "system:serviceaccount:kube-system:deployer"
	e.ImpersonatedGroups = []string{"system:serviceaccounts", ""}
	e.APIGroup = "apps"
	e.Subresource = "scale"
	e.Name = "checkout"
	e.Duration = 3*time.Hour + time.Microsecond
	e.BytesIn = 1 << 40
	e.Level = LevelRequestResponse
	e.RequestBody = []byte(`{"spec":{"replicas":3}}`)
	e.ResponseBody = []byte(`{"kind":"Scale"}`)
	e.Extra = map[string]string{"approver": "bob", "reason": "incident 123", "": "empty key", "z": ""}
	e.Decision, e.RefusalReason = DecisionRefused, "identity_header"
	return e
}

func roundTrip(t *testing.T, in *Event) *Event {
	t.Helper()
	b := Marshal(nil, in)
	var out Event
	if err := Unmarshal(b, &out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if again := Marshal(nil, &out); !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
	}
	return &out
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("ä日本🙂x", 50_000)
	tests := []struct {
		name string
		in   *Event
	}{
		{"empty", &Event{}},
		{"typical request", typicalRequest()},
		{"every field", fullEvent()},
		{"unicode", &Event{User: "Jürgen Ω 山田 🙂", Groups: []string{"グループ", "ü"}, Extra: map[string]string{"ключ": "значение"}}},
		{"invalid utf-8 kept as bytes", &Event{User: "\xff\xfe", Name: "a\x00b"}},
		{"long values", &Event{RequestURI: long, Groups: []string{long, long}, ResponseBody: []byte(long), Extra: map[string]string{long: long}}},
		{"unix epoch is not the zero time", &Event{Time: time.Unix(0, 0).UTC()}},
		{"before the epoch", &Event{Time: time.Date(1601, 1, 1, 0, 0, 0, 1000, time.UTC)}},
		{"negative numbers", &Event{ResponseCode: -1, Latency: -time.Second, BytesIn: -5, BytesOut: -1 << 62}},
		{"state change", &Event{Kind: KindGrant, Time: time.Now().UTC().Truncate(time.Microsecond), User: "bob",
			Extra: map[string]string{"grant_id": "g1", "expires": "2026-11-25T14:00:00Z", "k1": "", "k2": "v", "k3": "v", "k4": "v",
				"k5": "v", "k6": "v", "k7": "v", "k8": "v", "k9": "v", "k10": "v", "k11": "v", "k12": "v", "k13": "v", "k14": "v", "k15": "v", "k16": "v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := roundTrip(t, tt.in)
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v", got, tt.in)
			}
		})
	}
}

func TestRoundTripNormalises(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("CET", 3600)
	in := &Event{
		Time:        time.Date(2026, 1, 2, 3, 4, 5, 678901234, loc),
		Groups:      []string{},
		RequestBody: []byte{},
		Extra:       map[string]string{},
	}
	got := roundTrip(t, in)
	want := &Event{Time: time.Date(2026, 1, 2, 2, 4, 5, 678901000, time.UTC)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v (UTC, microseconds, empty collections as nil)", got, want)
	}
}

func TestUnmarshalDoesNotAliasInput(t *testing.T) {
	t.Parallel()
	b := Marshal(nil, fullEvent())
	var e Event
	if err := Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !reflect.DeepEqual(&e, fullEvent()) {
		t.Error("decoded event changed when the input buffer was overwritten")
	}
}

func TestUnmarshalRejects(t *testing.T) {
	t.Parallel()
	valid := Marshal(nil, typicalRequest())
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", []byte{2}},
		{"truncated", valid[:len(valid)-1]},
		{"unknown tag", []byte{1, tagEnd, 1, 'x'}},
		{"tags out of order", []byte{1, tagUser, 1, 'a', tagEventID, 1, 'b'}},
		{"repeated tag", []byte{1, tagUser, 1, 'a', tagUser, 1, 'b'}},
		{"empty string field", []byte{1, tagUser, 0}},
		{"zero int field", []byte{1, tagResponseCode, 0}},
		{"overlong varint", []byte{1, tagUser, 0x81, 0x00, 'a'}},
		{"huge length", []byte{1, tagUser, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"huge list count", []byte{1, tagGroups, 0xff, 0xff, 0x03, 0}},
		{"empty list", []byte{1, tagGroups, 0}},
		{"extra keys unsorted", []byte{1, tagExtra, 2, 1, 'b', 0, 1, 'a', 0}},
		{"extra keys duplicated", []byte{1, tagExtra, 2, 1, 'a', 0, 1, 'a', 0}},
		{"response code beyond int32", append([]byte{1, tagResponseCode}, 0x80, 0x80, 0x80, 0x80, 0x20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var e Event
			if err := Unmarshal(tt.b, &e); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Unmarshal(%x) = %v, want ErrCorrupt", tt.b, err)
			}
		})
	}
}

func TestMarshalDoesNotAllocate(t *testing.T) {
	e := typicalRequest()
	e.Extra = map[string]string{"a": "1", "b": "2"}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = Marshal(buf[:0], e) }); n != 0 {
		t.Errorf("Marshal allocates %.1f times per call, want 0", n)
	}
}

func BenchmarkMarshal(b *testing.B) {
	e := typicalRequest()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = Marshal(buf[:0], e)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkUnmarshal(b *testing.B) {
	buf := Marshal(nil, typicalRequest())
	var e Event
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := Unmarshal(buf, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(Marshal(nil, typicalRequest()))
	f.Add(Marshal(nil, fullEvent()))
	f.Add(Marshal(nil, &Event{}))
	f.Add([]byte{1, tagExtra, 2, 1, 'a', 0, 1, 'b', 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := Unmarshal(b, &e); err != nil {
			return
		}
		if again := Marshal(nil, &e); !bytes.Equal(again, b) {
			t.Fatalf("accepted record re-encodes differently:\n in %x\nout %x", b, again)
		}
	})
}
