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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSyncRestartAfterRoomKey: a bot's Syncer is restarted right after the batch that brought
// it a room key by to-device: the batch is committed, and the bot's next sync has not reached
// the homeserver, which therefore still holds the to-device message (a server deletes those
// only once the next since token is used). The restarted Syncer goes over that batch again (as
// every Run start does, see matrix.Syncer), and the server hands the message out again. The
// bot still decrypts what follows in the room, and logs no failed or duplicate Olm decryption.
// The fault is injected by a proxy that holds the bot's sync after the one with the room key
// until the bot stops; everything else is the real server's. Before, the crypto machine got the
// Olm message a second time and logged "Failed to decrypt to-device event: duplicate olm
// message" at error level.
func TestSyncRestartAfterRoomKey(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	proxy := newToDeviceProxy(t, srv.URL)

	_, pw := srv.RegisterUser(t, "bot")
	logs := new(logtest.Buffer)
	db, err := matrix.OpenDatabase(context.Background(), filepath.Join(t.TempDir(), "bot.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	bot, err := matrix.New(context.Background(), matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("bot", pw), DB: db, Logger: logs.Logger()})
	must(t, err)
	t.Cleanup(func() { bot.Close() })
	m, err := e2ee.Enable(context.Background(), bot, e2ee.Options{PickleKey: testKey})
	must(t, err)
	t.Cleanup(func() { m.Close() })
	got := &inbox{}
	run := func() (s *matrix.Syncer, stop func()) {
		s = bot.NewSyncer(matrix.SyncOptions{Timeout: 500 * time.Millisecond})
		s.OnMessage(func(ctx context.Context, evt *matrix.Event) error { got.add(evt); return nil })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return s, stop
	}

	room := encryptedRoom(t, alice, &party{c: bot})
	s, stop := run()
	// Past the first sync, which is not gone over again (see matrix.Syncer).
	waitFor(t, "the bot's first sync", func() bool { return s.Stats().Batches >= 1 })
	proxy.holdAfterRoomKey()
	send(t, alice, room, matrix.Text("one")) // the room key goes to the bot with it, by to-device
	select {
	case <-proxy.held:
	case <-time.After(matrixtest.WaitTimeout):
		t.Fatal("the bot never asked for the sync after the one with the room key")
	}
	stop()

	run()
	send(t, alice, room, matrix.Text("two"))
	got.wait(t, "one") // in the batch with the room key, or the one after it
	if evt := got.wait(t, "two"); !evt.Mautrix.WasEncrypted {
		t.Error(`"two" was not encrypted`)
	}
	if n := got.count("one"); n != 1 {
		t.Errorf(`"one" handed out %d times, want once`, n)
	}
	if n := proxy.roomKeyAnswers(); n < 2 {
		// Not a failure of the code under test: the server did not hand the message out
		// again, so the test did not test what it is for.
		t.Fatalf("the server handed the room key out %d time(s); the test needs it again after the restart", n)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "olm") && (strings.Contains(l, "duplicate") || strings.Contains(l, "failed to decrypt")) ||
			strings.Contains(line, "level=ERROR") {
			t.Errorf("logged: %s", line)
		}
	}
}

// toDeviceProxy forwards the bot's requests to the server and can hold back the bot's sync
// after the first answer that brought an encrypted to-device message, until the bot stops.
type toDeviceProxy struct {
	URL  string
	held chan struct{} // closed when that sync is held

	mu       sync.Mutex
	armed    bool
	holdFrom string // the since token of the sync to hold; "" for none
	answers  int    // sync answers with an encrypted to-device message
}

func newToDeviceProxy(t *testing.T, upstream string) *toDeviceProxy {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &toDeviceProxy{held: make(chan struct{})}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Del("Accept-Encoding") // bodies the proxy can read
	}}
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/_matrix/client/v3/sync" || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		var sr struct {
			NextBatch string `json:"next_batch"`
			ToDevice  struct {
				Events []struct {
					Type string `json:"type"`
				} `json:"events"`
			} `json:"to_device"`
		}
		if err := json.Unmarshal(body, &sr); err != nil {
			return err
		}
		for _, evt := range sr.ToDevice.Events {
			if evt.Type == "m.room.encrypted" {
				p.mu.Lock()
				p.answers++
				if p.armed {
					p.armed, p.holdFrom = false, sr.NextBatch
				}
				p.mu.Unlock()
				break
			}
		}
		return nil
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/client/v3/sync" && p.takeHold(r.URL.Query().Get("since")) {
			close(p.held)
			select { // never sent on: the server must not see the next since token
			case <-r.Context().Done(): // the bot stopped
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

// holdAfterRoomKey arms the proxy: the sync after the next answer with an encrypted to-device
// message is held, once.
func (p *toDeviceProxy) holdAfterRoomKey() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = true
}

func (p *toDeviceProxy) takeHold(since string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holdFrom == "" || since != p.holdFrom {
		return false
	}
	p.holdFrom = ""
	return true
}

func (p *toDeviceProxy) roomKeyAnswers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answers
}
