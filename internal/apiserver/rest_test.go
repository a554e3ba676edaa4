package apiserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// restCall sends a JSON request and decodes the JSON answer into a map.
func restCall(t *testing.T, c *http.Client, method, url, token, body string, header http.Header) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON (%v): %s", method, url, err, raw)
	}
	return resp.StatusCode, resp.Header, out
}

func TestRESTLoginWhoAmILogout(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			c := ts.httpClient(t, h2)
			// A client claiming another address is not believed.
			spoof := http.Header{"Grpc-Metadata-X-Kaccess-Client-Address": {"203.0.113.9:1"}}
			code, _, login := restCall(t, c, http.MethodPost, ts.url("/v1/auth:login"), "",
				fmt.Sprintf(`{"source":"corp","username":"alice","password":%q}`, alicePassword), spoof)
			if code != http.StatusOK {
				t.Fatalf("login: %d %v", code, login)
			}
			token, _ := login["token"].(string)
			sessionID, _ := login["sessionId"].(string)
			if token == "" || sessionID == "" || login["expireTime"] == nil {
				t.Fatalf("login answer lacks token, sessionId or expireTime: %v", login)
			}
			if id, _ := login["identity"].(map[string]any); id["user"] != "alice" || id["source"] != "corp" || id["uid"] != "0b1c-alice" {
				t.Fatalf("login identity = %v", login["identity"])
			}
			if exp, err := time.Parse(time.RFC3339, login["expireTime"].(string)); err != nil || exp.Before(time.Now()) {
				t.Fatalf("expireTime %v: %v", login["expireTime"], err)
			}

			code, _, who := restCall(t, c, http.MethodGet, ts.url("/v1/auth:whoami"), token, "", nil)
			if id, _ := who["identity"].(map[string]any); code != http.StatusOK || id["user"] != "alice" || who["sessionId"] != sessionID {
				t.Fatalf("whoami: %d %v", code, who)
			}
			if groups, _ := who["identity"].(map[string]any)["groups"].([]any); len(groups) != 2 || groups[0] != "ad:k8s-devs" {
				t.Fatalf("whoami groups = %v", groups)
			}

			code, _, out := restCall(t, c, http.MethodPost, ts.url("/v1/auth:logout"), token, "{}", nil)
			if code != http.StatusOK {
				t.Fatalf("logout: %d %v", code, out)
			}
			code, hdr, out := restCall(t, c, http.MethodGet, ts.url("/v1/auth:whoami"), token, "", nil)
			if code != http.StatusUnauthorized || !strings.Contains(fmt.Sprint(out["message"]), "logged out or revoked") ||
				!strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("whoami after logout: %d %v %v, want 401 with a Bearer challenge", code, hdr, out)
			}

			logs := ts.logs.String()
			if strings.Contains(logs, alicePassword) || strings.Contains(logs, token) {
				t.Fatalf("the password or the token reached the log:\n%s", logs)
			}
			if strings.Contains(logs, "203.0.113.9") {
				t.Fatalf("a client-supplied address reached the log:\n%s", logs)
			}
			if !strings.Contains(logs, `"session_id":"`+sessionID+`"`) || !strings.Contains(logs, `"client_address":"127.0.0.1:`) {
				t.Fatalf("login event lacks session_id or client_address:\n%s", logs)
			}
		})
	}
}

func TestRESTErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	c := ts.httpClient(t, false)
	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{name: "wrong password", method: http.MethodPost, path: "/v1/auth:login",
			body: `{"source":"corp","username":"alice","password":"wrong"}`, code: http.StatusUnauthorized, msg: "invalid username or password"},
		{name: "directory down", method: http.MethodPost, path: "/v1/auth:login",
			body: `{"source":"down","username":"alice","password":"x"}`, code: http.StatusServiceUnavailable, msg: "directory is unavailable"},
		{name: "rate limited", method: http.MethodPost, path: "/v1/auth:login",
			body: `{"source":"busy","username":"alice","password":"x"}`, code: http.StatusTooManyRequests, msg: "too many"},
		{name: "unknown source", method: http.MethodPost, path: "/v1/auth:login",
			body: `{"source":"nosuch","username":"alice","password":"x"}`, code: http.StatusBadRequest, msg: "source: no login source named"},
		{name: "locked", method: http.MethodPost, path: "/v1/auth:login",
			body: `{"source":"corp","username":"lou","password":"pw-lou"}`, code: http.StatusForbidden, msg: "locked"},
		{name: "not JSON", method: http.MethodPost, path: "/v1/auth:login", body: `{"source":`, code: http.StatusBadRequest},
		{name: "whoami without a token", method: http.MethodGet, path: "/v1/auth:whoami", code: http.StatusUnauthorized, msg: "no credential"},
		{name: "no such route", method: http.MethodGet, path: "/v1/nothing", code: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, out := restCall(t, c, tt.method, ts.url(tt.path), "", tt.body, nil)
			if code != tt.code || !strings.Contains(fmt.Sprint(out["message"]), tt.msg) {
				t.Fatalf("%s %s = %d %v, want %d with %q", tt.method, tt.path, code, out, tt.code, tt.msg)
			}
		})
	}
}

func TestRESTListSourcesAndOpenAPI(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	c := ts.httpClient(t, false)

	code, _, out := restCall(t, c, http.MethodGet, ts.url("/v1/auth/sources?pageSize=1"), "", "", nil)
	sources, _ := out["sources"].([]any)
	if code != http.StatusOK || len(sources) != 1 || out["nextPageToken"] == "" {
		t.Fatalf("sources: %d %v", code, out)
	}
	if s := sources[0].(map[string]any); s["name"] != "busy" || s["type"] != "ldap" {
		t.Fatalf("first source = %v", s)
	}

	code, hdr, doc := restCall(t, c, http.MethodGet, ts.url("/openapi.json"), "", "", nil)
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("/openapi.json: %d %v", code, hdr)
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/auth:login", "/v1/auth:whoami", "/v1/auth:logout", "/v1/auth/sources"} {
		if _, ok := paths[p]; !ok {
			t.Errorf("/openapi.json lacks %s", p)
		}
	}
}
