package oidctest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// FrontServerName is the server name of the users a Front knows: @<sub>:front.test.
const FrontServerName = "front.test"

// Front is a test Matrix front. No homeserver with the OAuth 2.0 API (MSC3861,
// matrix-authentication-service) runs on our machines, and Dendrite has none; a Front serves
// auth_metadata naming the OP as its authorization server, registers clients into the OP
// (dynamic client registration), and accepts the OP's access tokens (asking the OP's
// userinfo endpoint) on the few client-API endpoints tests use: whoami, joined_rooms (the one
// room !case:front.test), send and sync. Its
// token endpoint is the OP's through a proxy that can be made to fail.
type Front struct {
	URL string
	op  *OP

	mu            sync.Mutex
	expired       map[string]bool // access tokens refused from now on (fault injection)
	sent          []string        // bodies of the events sent, in order
	seen          map[string]int  // how often each access token was used
	timeline      []map[string]any
	batch         int
	tokenDown     bool // the token endpoint answers 503 (fault injection)
	tokenFailures int
}

// StartFront starts a Front for o, stopped when the test ends.
func StartFront(t testing.TB, o *OP) *Front {
	t.Helper()
	f := &Front{op: o, expired: map[string]bool{}, seen: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/v1/auth_metadata", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{
			"issuer": o.Issuer, "authorization_endpoint": o.Issuer + "/auth", "token_endpoint": f.URL + "/token",
			"registration_endpoint": f.URL + "/register", "revocation_endpoint": o.Issuer + "/revoke",
			"device_authorization_endpoint": o.Issuer + "/device_authorization",
			"response_types_supported":      []string{"code"}, "response_modes_supported": []string{"query", "fragment"},
			"grant_types_supported":            []string{"authorization_code", "refresh_token", string(oidc.GrantTypeDeviceCode)},
			"code_challenge_methods_supported": []string{"S256"},
			"account_management_uri":           o.Issuer + "/account",
		})
	})
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /register", func(w http.ResponseWriter, r *http.Request) {
		var meta struct {
			RedirectURIs []string `json:"redirect_uris"`
			GrantTypes   []string `json:"grant_types"`
			ClientURI    string   `json:"client_uri"`
		}
		if err := json.NewDecoder(r.Body).Decode(&meta); err != nil || meta.ClientURI == "" {
			writeJSON(w, 400, map[string]any{"error": "invalid_client_metadata"})
			return
		}
		cid := "dyn-" + clientSerial()
		o.Register(storage.NativeClient(cid, meta.RedirectURIs...), meta.GrantTypes...)
		writeJSON(w, 201, map[string]any{"client_id": cid, "redirect_uris": meta.RedirectURIs})
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, r *http.Request) {
		if sub, ok := f.auth(w, r); ok {
			writeJSON(w, 200, map[string]any{"user_id": "@" + sub + ":" + FrontServerName, "device_id": "FRONTDEV"})
		}
	})
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); !ok {
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.sent = append(f.sent, string(body))
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"event_id": "$" + r.PathValue("txn")})
	})
	mux.HandleFunc("GET /_matrix/client/v3/joined_rooms", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); ok {
			writeJSON(w, 200, map[string]any{"joined_rooms": []string{"!case:" + FrontServerName}})
		}
	})
	mux.HandleFunc("GET /_matrix/client/v3/sync", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); !ok {
			return
		}
		f.mu.Lock()
		evs := f.timeline
		f.timeline = nil
		f.batch++
		next := fmt.Sprintf("s%d", f.batch)
		f.mu.Unlock()
		if len(evs) == 0 {
			time.Sleep(100 * time.Millisecond) // a short long-poll: nothing to say
		}
		rooms := map[string]any{}
		if len(evs) > 0 {
			rooms["join"] = map[string]any{"!case:" + FrontServerName: map[string]any{"timeline": map[string]any{"events": evs}}}
		}
		writeJSON(w, 200, map[string]any{"next_batch": next, "rooms": rooms})
	})
	mux.HandleFunc("/_matrix/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.auth(w, r); ok {
			writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND", "error": "not here"})
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// token proxies the OP's token endpoint, or answers 503 while SetTokenDown(true).
func (f *Front) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.tokenDown
	if down {
		f.tokenFailures++
	}
	f.mu.Unlock()
	if down {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, f.op.Issuer+"/oauth/token", r.Body)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, "op down", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// auth checks the bearer token with the OP's userinfo endpoint.
func (f *Front) auth(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	f.seen[tok]++
	expired := f.expired[tok]
	f.mu.Unlock()
	unknown := func() {
		writeJSON(w, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "unknown token", "soft_logout": true})
	}
	if tok == "" || expired {
		unknown()
		return "", false
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, f.op.Issuer+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		writeJSON(w, 502, map[string]any{"errcode": "M_UNKNOWN", "error": "op down"})
		return "", false
	}
	defer resp.Body.Close()
	var ui struct {
		Sub string `json:"sub"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&ui) != nil || ui.Sub == "" {
		unknown()
		return "", false
	}
	return ui.Sub, true
}

// Expire makes the front refuse tok from now on, as a homeserver refuses an expired token.
func (f *Front) Expire(tok string) {
	f.mu.Lock()
	f.expired[tok] = true
	f.mu.Unlock()
}

// ExpireAll refuses every access token seen so far.
func (f *Front) ExpireAll() {
	f.mu.Lock()
	for tok := range f.seen {
		f.expired[tok] = true
	}
	f.mu.Unlock()
}

// Seen is how often tok came with a request.
func (f *Front) Seen(tok string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[tok]
}

// SeenTokens are the access tokens that came with a request so far.
func (f *Front) SeenTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []string
	for tok := range f.seen {
		ts = append(ts, tok)
	}
	slices.Sort(ts)
	return ts
}

// SentBodies are the contents of the events sent, in order.
func (f *Front) SentBodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

// Deliver makes the next sync carry a message from someone else in !case:front.test.
func (f *Front) Deliver(body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batch++
	f.timeline = append(f.timeline, map[string]any{"type": "m.room.message", "event_id": fmt.Sprintf("$ev%d", f.batch),
		"sender": "@colleague:" + FrontServerName, "origin_server_ts": time.Now().UnixMilli(),
		"content": map[string]any{"msgtype": "m.text", "body": body}})
}

// SetTokenDown makes the token endpoint answer 503 (true) or work again (false).
func (f *Front) SetTokenDown(down bool) {
	f.mu.Lock()
	f.tokenDown = down
	f.mu.Unlock()
}

// TokenFailures is how many token requests were answered 503.
func (f *Front) TokenFailures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenFailures
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var serial struct {
	sync.Mutex
	n int
}

// clientSerial is a client ID suffix that sorts in registration order (LastClientID).
func clientSerial() string {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%08d-%s", serial.n, hex.EncodeToString(b))
}
