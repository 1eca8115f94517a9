package e2ee_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// stopWait is how long a stopped Syncer may take to return in these tests: generous, for a
// loaded machine; what they catch is a stop that waits for a homeserver that never answers.
const stopWait = time.Minute

// holdingProxy forwards a client's requests to the server, except those for which hold says
// so: they are held (never answered) until the client gives up on them or the test ends.
type holdingProxy struct {
	URL string

	mu     sync.Mutex
	hold   func(r *http.Request, body []byte) bool // nil: none held
	held   chan struct{}                           // closed when the first request is held
	closed bool
}

func newHoldingProxy(t *testing.T, upstream string) *holdingProxy {
	t.Helper()
	target, err := url.Parse(upstream)
	must(t, err)
	p := &holdingProxy{held: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.mu.Lock()
		hold := p.hold != nil && p.hold(r, body)
		if hold && !p.closed {
			close(p.held)
			p.closed = true
		}
		p.mu.Unlock()
		if hold {
			select {
			case <-r.Context().Done(): // the client gave up
			case <-t.Context().Done():
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	p.URL = ts.URL
	return p
}

func (p *holdingProxy) setHold(hold func(r *http.Request, body []byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = hold
}

// waitHeld waits until a request is held.
func (p *holdingProxy) waitHeld(t *testing.T, what string) {
	t.Helper()
	select {
	case <-p.held:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the proxy held no %s", what)
	}
}

// stopWithin stops the party's Syncer and fails the test when Run has not returned after
// stopWait; the Syncer is then left to the end of the test.
func stopWithin(t *testing.T, p *party, why string) {
	t.Helper()
	stop := p.stop
	p.stop = nil
	done := make(chan struct{})
	go func() { defer close(done); stop() }()
	select {
	case <-done:
	case <-time.After(stopWait):
		t.Fatalf("%s's Syncer did not return within %s of its stop, %s", p.user, stopWait, why)
	}
}

// runSyncer starts a new Syncer on the party's client (after stopWithin).
func runSyncer(p *party) {
	s := p.c.NewSyncer(matrix.SyncOptions{Timeout: 500 * time.Millisecond})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error { p.got.add(evt); return nil })
	p.syncer = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	p.stop = func() { cancel(); <-done }
}

// legacyRoomKey sends to's device a room key for a new Megolm session the way older clients
// did: Olm-encrypted, from an Olm account of the sender's own, and without the sender's
// device keys in the payload (sender_device_keys). The recipient knows the sending device from
// neither its store nor the message, so it asks the homeserver for the sender's devices. It
// returns the session's ID.
func legacyRoomKey(t *testing.T, from *matrix.Client, to *party) id.SessionID {
	t.Helper()
	ctx := t.Context()
	bot := to.m.OlmMachine().OwnIdentity()
	claimed, err := from.Mautrix().ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		to.c.UserID(): {to.c.DeviceID(): id.KeyAlgorithmSignedCurve25519}}})
	must(t, err)
	var otk id.Curve25519
	for _, k := range claimed.OneTimeKeys[to.c.UserID()][to.c.DeviceID()] {
		otk = k.Key
	}
	if otk == "" {
		t.Fatalf("no one-time key of %s claimed", to.user)
	}
	acct, err := olm.NewAccount()
	must(t, err)
	signing, identity, err := acct.IdentityKeys()
	must(t, err)
	sess, err := acct.NewOutboundSession(bot.IdentityKey, otk)
	must(t, err)
	group, err := olm.NewOutboundGroupSession()
	must(t, err)
	groupKey := group.Key()
	payload, err := json.Marshal(map[string]any{
		"type":           event.ToDeviceRoomKey.Type,
		"sender":         from.UserID(),
		"recipient":      to.c.UserID(),
		"recipient_keys": map[string]any{"ed25519": bot.SigningKey},
		"keys":           map[string]any{"ed25519": signing},
		"content": map[string]any{
			"algorithm":   id.AlgorithmMegolmV1,
			"room_id":     "!legacy:" + to.srv.ServerName,
			"session_id":  group.ID(),
			"session_key": groupKey,
		},
	})
	must(t, err)
	msgType, ciphertext, err := sess.Encrypt(payload)
	must(t, err)
	content := &event.EncryptedEventContent{Algorithm: id.AlgorithmOlmV1, SenderKey: identity,
		OlmCiphertext: event.OlmCiphertexts{bot.IdentityKey: {Type: msgType, Body: string(ciphertext)}}}
	_, err = from.Mautrix().SendToDevice(ctx, event.ToDeviceEncrypted, &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{to.c.UserID(): {to.c.DeviceID(): {Parsed: content}}}})
	must(t, err)
	return group.ID()
}

// TestStopWhileFetchingSenderKeys: a Syncer handling an Olm message whose sender's device it
// does not know asks the homeserver for the sender's device keys; a stop while the homeserver
// does not answer returns at once, and the message is not lost: the next Run handles it.
// Before, mautrix asked inside the message's transaction, whose context does not end with
// Run's, and the stop waited for the HTTP client's two minutes and mautrix's retries.
func TestStopWhileFetchingSenderKeys(t *testing.T) {
	srv := matrixtest.NewServer(t)
	proxy := newHoldingProxy(t, srv.URL)
	_, pw := srv.RegisterUser(t, "stop-bot")
	bot := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), "stop-bot.db"), user: "stop-bot", password: pw, got: &inbox{}, via: proxy.URL}
	bot.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(bot.close)

	legacyID, legacyPW := srv.RegisterUser(t, "legacy")
	db, err := matrix.OpenDatabase(t.Context(), filepath.Join(t.TempDir(), "legacy.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	legacy, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("legacy", legacyPW), DB: db, Logger: logger(t)})
	must(t, err)
	t.Cleanup(func() { legacy.Close() })

	proxy.setHold(func(r *http.Request, body []byte) bool {
		return strings.HasSuffix(r.URL.Path, "/keys/query") && bytes.Contains(body, []byte(legacyID))
	})
	session := legacyRoomKey(t, legacy, bot)
	proxy.waitHeld(t, "query for the legacy sender's device keys")
	stopWithin(t, bot, "held in a query for a sender's device keys")

	proxy.setHold(nil)
	runSyncer(bot)
	waitFor(t, "the room key to be stored after the restart", func() bool {
		var n int
		err := bot.db.QueryRow(t.Context(), `SELECT count(*) FROM crypto_megolm_inbound_session WHERE session_id = $1`, session).Scan(&n)
		return err == nil && n == 1
	})
}

// TestStopWhileStatusWaits: a Syncer waiting to process a sync response while Status holds the
// machine's cross-signing lock (Status waits for a homeserver that does not answer) returns
// at once when stopped. Before, the Syncer waited for the lock without end, and its stop with
// it, until Status's request ended.
func TestStopWhileStatusWaits(t *testing.T) {
	srv := matrixtest.NewServer(t)
	proxy := newHoldingProxy(t, srv.URL)
	_, pw := srv.RegisterUser(t, "status-bot")
	bot := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), "status-bot.db"), user: "status-bot", password: pw, got: &inbox{}, via: proxy.URL}
	bot.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(bot.close)
	bot.syncedPast(2)() // the bot's own first queries for its keys are done

	own := []byte(bot.c.UserID())
	proxy.setHold(func(r *http.Request, body []byte) bool {
		return strings.HasSuffix(r.URL.Path, "/keys/query") && bytes.Contains(body, own)
	})
	ctx, cancel := context.WithCancel(t.Context())
	statusDone := make(chan error, 1)
	go func() { _, err := bot.m.Status(ctx); statusDone <- err }()
	defer func() { cancel(); <-statusDone }()
	proxy.waitHeld(t, "query of the bot's own keys by Status")
	waitFor(t, "the Syncer to wait for the lock Status holds", func() bool { return e2ee.CrossLockWaiting(bot.m) >= 1 })
	stopWithin(t, bot, "waiting for the lock a stuck Status holds")
	select {
	case err := <-statusDone:
		t.Fatalf("Status returned (%v) while the homeserver held its query", err)
	default:
	}
}
