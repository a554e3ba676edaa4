package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kaccess/kaccess/internal/testenv"
)

// readers is the size of the AD population doing kubectl-like traffic.
const readers = 8

// outcome is one request a simulated client made, as the client saw it.
type outcome struct {
	phase   int
	class   string    // get, list, watch, create, delete, login-ad, login-oidc, elevation, search, skew-30s, skew-90s
	home    int       // the replica the client prefers
	replica int       // the replica that was asked
	started time.Time // when the client's call began (its first attempt)
	at      time.Time // when this attempt ended
	code    int       // 0: no complete response (refused connection, cut off)
	latency time.Duration
	id      string // X-Request-Id of a complete response
	full    bool   // 503 because the replica's audit spool could not take records
	proxied bool   // a Kubernetes API request (recorded one by one)
	body    string // the start of a refusal's body, for the report's samples
	final   bool   // the call's last attempt: what the client got in the end
}

// recorder keeps every outcome and the current phase.
type recorder struct {
	phase atomic.Int32
	mu    sync.Mutex
	outs  []outcome
}

func (rc *recorder) add(o outcome) {
	rc.mu.Lock()
	rc.outs = append(rc.outs, o)
	rc.mu.Unlock()
}

func (rc *recorder) all() []outcome {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]outcome(nil), rc.outs...)
}

// traffic is the generated population: it knows the rig, the tokens and the recorder.
type traffic struct {
	r    *rig
	rec  *recorder
	stop chan struct{}
	wg   sync.WaitGroup

	tokens []string // one AD session per reader, logged in before the soak starts
	lead   string   // soak-lead: approver and auditor
}

// call sends one request to replica i and reads the whole answer.
func (tr *traffic) call(ctx context.Context, i int, method, path, token string, body []byte) (code int, id string, data []byte, full bool) {
	rep := tr.r.replicas[i]
	req, err := http.NewRequestWithContext(ctx, method, rep.url+path, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := rep.client.Do(req)
	if err != nil {
		return 0, "", nil, false
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, false // cut off: not an answer the client got
	}
	full = resp.StatusCode == http.StatusServiceUnavailable && bytes.Contains(data, []byte("audit spool is full"))
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), data, full
}

// do is call as through a load balancer: the client's home replica unless the balancer's
// health check (/readyz) took it out and the other one is in, and the other replica when the
// one asked does not answer at all. Each attempt is an outcome.
func (tr *traffic) do(class string, home int, method, path, token string, body []byte, proxied bool) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	code, data := 0, []byte(nil)
	started := time.Now()
	first := home
	if !tr.r.replicas[home].ready.Load() && tr.r.replicas[1-home].ready.Load() {
		first = 1 - home
	}
	for attempt, i := range []int{first, 1 - first} {
		began := time.Now()
		c, id, d, full := tr.call(ctx, i, method, path, token, body)
		o := outcome{phase: int(tr.rec.phase.Load()), class: class, home: home, replica: i, started: started, at: time.Now(),
			code: c, latency: time.Since(began), id: id, full: full, proxied: proxied}
		o.final = c != 0 || attempt == 1
		if c >= 300 {
			o.body = string(d[:min(len(d), 240)])
		}
		tr.rec.add(o)
		code, data = c, d
		if c != 0 || attempt == 1 {
			break
		}
	}
	return code, data
}

func (tr *traffic) stopped() bool {
	select {
	case <-tr.stop:
		return true
	default:
		return false
	}
}

func (tr *traffic) loop(pause time.Duration, f func(n int)) {
	tr.wg.Go(func() {
		for n := 0; !tr.stopped(); n++ {
			f(n)
			time.Sleep(pause + time.Duration(rand.Int64N(int64(pause)/2+1)))
		}
	})
}

// healthCheck polls each replica's /readyz every 500 ms, as a load balancer would.
func (tr *traffic) healthCheck() {
	for _, rep := range tr.r.replicas {
		rep.ready.Store(true)
		tr.wg.Go(func() {
			client := &http.Client{Timeout: time.Second}
			for !tr.stopped() {
				resp, err := client.Get(rep.opsURL + "/readyz")
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					resp.Body.Close()
				}
				rep.ready.Store(ok)
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}

// start runs the population until Stop.
func (tr *traffic) start() {
	tr.healthCheck()
	cms := "/api/v1/namespaces/" + soakNamespace + "/configmaps"
	for u := range readers {
		home := u % 2
		tok := tr.tokens[u]
		tr.loop(40*time.Millisecond, func(n int) { // kubectl get / list
			if n%3 == 0 {
				tr.do("list", home, "GET", cms+"?limit=50", tok, nil, true)
			} else {
				tr.do("get", home, "GET", cms+"/soak-fixed", tok, nil, true)
			}
		})
	}
	for w := range 2 { // creates and deletes
		tok := tr.tokens[w]
		tr.loop(150*time.Millisecond, func(n int) {
			name := fmt.Sprintf("soak-w%d-%d", w, n)
			body, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]string{"name": name}, "data": map[string]string{"n": fmt.Sprint(n)}})
			tr.do("create", w, "POST", cms, tok, body, true)
			tr.do("delete", w, "DELETE", cms+"/"+name, tok, nil, true)
		})
	}
	for w := range 4 { // watches held open, re-established when they end
		tok := tr.tokens[w+2]
		tr.loop(100*time.Millisecond, func(int) {
			tr.do("watch", w%2, "GET", cms+"?watch=1&timeoutSeconds=10", tok, nil, true)
		})
	}
	tr.loop(2*time.Second, func(n int) { // AD logins
		user := readerNames()[n%readers]
		body, _ := json.Marshal(map[string]string{"source": "corp", "username": user, "password": adPassword})
		tr.do("login-ad", n%2, "POST", "/v1/auth:login", "", body, false)
	})
	tr.loop(4*time.Second, func(n int) { // OIDC logins: the provider's code flow, then the exchange
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		toks, err := tr.r.idp.Login(ctx, tr.r.idp.User2, testenv.OIDCClientID)
		if err != nil { // the provider is down: a refused login as the user sees it
			tr.rec.add(outcome{phase: int(tr.rec.phase.Load()), class: "login-oidc", home: n % 2, replica: n % 2, at: time.Now()})
			return
		}
		body, _ := json.Marshal(map[string]string{"source": "idp", "id_token": toks.IDToken})
		tr.do("login-oidc", n%2, "POST", "/v1/auth:exchangeToken", "", body, false)
	})
	tr.loop(3*time.Second, func(n int) { // audit searches by the auditor
		tr.do("search", n%2, "GET", "/v1/auditevents?page_size=50&filter="+
			strings.ReplaceAll(`user = "soak-user1"`, " ", "%20"), tr.lead, nil, false)
	})
	tr.loop(20*time.Second, func(n int) { // elevation requests and approvals (not the probe's user)
		tr.elevate(n%2, tr.tokens[n%(readers-1)], "30s")
	})
}

// elevate asks for read-secrets and has the lead approve it; it returns the request's name.
func (tr *traffic) elevate(home int, token, duration string) (string, error) {
	body, _ := json.Marshal(map[string]string{"elevation": "read-secrets", "duration": duration, "reason": "soak"})
	code, data := tr.do("elevation", home, "POST", "/v1/accessrequests", token, body, false)
	if code != 200 {
		return "", fmt.Errorf("request elevation: %d %s", code, data)
	}
	var out struct {
		AccessRequest struct {
			Name string `json:"name"`
		} `json:"accessRequest"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.AccessRequest.Name == "" {
		return "", fmt.Errorf("request elevation: %s", data)
	}
	name := out.AccessRequest.Name
	code, data = tr.do("elevation", 1-home, "POST", "/v1/accessrequests/"+name+":approve", tr.lead, []byte(`{"comment":"soak"}`), false)
	if code != 200 {
		return name, fmt.Errorf("approve %s: %d %s", name, code, data)
	}
	return name, nil
}

func (tr *traffic) Stop() {
	close(tr.stop)
	tr.wg.Wait()
}

// adLogin logs user in at replica 0 and returns the session token.
func (tr *traffic) adLogin(user string) (string, error) {
	body, _ := json.Marshal(map[string]string{"source": "corp", "username": user, "password": adPassword})
	code, data := tr.do("login-ad", 0, "POST", "/v1/auth:login", "", body, false)
	var out struct {
		Token string `json:"token"`
	}
	if code != 200 || json.Unmarshal(data, &out) != nil || out.Token == "" {
		return "", errors.New("login " + user + ": " + fmt.Sprint(code) + " " + string(data))
	}
	return out.Token, nil
}
