package matrix_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// lateStore is a fault injector between a client and the real homeserver for what Dendrite
// does with a send whose client gave up or died mid-request: it logs the request as failed,
// stores the event a moment later all the same, and keeps no answer for the transaction ID, so
// a retry with the same ID becomes a second event.
//
// Once armed, it holds back the next /send: the client gets no answer (the connection is
// closed, or it waits until the client gives up). It hands the request to the server only
// after the client's first look into the room (GET /messages) has been answered, under another
// transaction ID (the server's cache must not know it), and the client's next request waits
// until the server has stored it. Everything else is answered by the real server.
type lateStore struct {
	*httptest.Server
	target *url.URL
	// hang: the held /send waits for the client to give up, else it is closed at once.
	hang bool

	armed   atomic.Bool
	held    chan struct{} // closed when the /send is held back
	stored  chan struct{} // closed when the server has stored it
	resends atomic.Int64  // /sends after the held one

	mu       sync.Mutex
	heldPath string
	heldAuth string
	heldBody []byte
	once     sync.Once
}

func newLateStore(t *testing.T, target string, hang bool) *lateStore {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &lateStore{target: u, hang: hang, held: make(chan struct{}), stored: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && isSend(r.URL.Path) {
			if p.armed.CompareAndSwap(true, false) {
				p.hold(w, r)
				return
			}
			if p.isHeld() {
				p.resends.Add(1)
			}
		}
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/messages") && p.isHeld() {
			// The look is answered as the server sees the room now, without the event.
			rp.ServeHTTP(w, r)
			p.once.Do(func() { p.store(t) })
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *lateStore) isHeld() bool {
	select {
	case <-p.held:
		return true
	default:
		return false
	}
}

// hold keeps the request, and answers nothing.
func (p *lateStore) hold(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.heldPath, p.heldAuth, p.heldBody = r.URL.Path, r.Header.Get("Authorization"), body
	p.mu.Unlock()
	close(p.held)
	if p.hang {
		<-r.Context().Done() // the client gave up
		return
	}
	panic(http.ErrAbortHandler) // the connection closes with no answer
}

// store sends the held request to the server under another transaction ID and waits for it.
func (p *lateStore) store(t *testing.T) {
	p.mu.Lock()
	path, auth, body := p.heldPath, p.heldAuth, p.heldBody
	p.mu.Unlock()
	u := *p.target
	u.Path = path + ".late"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, u.String(), bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("store the held send: %v", err)
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("store the held send: HTTP %d", resp.StatusCode)
		return
	}
	close(p.stored)
}

// TestOutboxSendStoredAfterItFailed: the homeserver stores a send whose request failed (no
// answer; or the client gave up, and was restarted) only after the outbox's first look into
// the room, and without knowing its transaction ID. The outbox looks a second time before it
// sends the item again, finds the event, and reports it: the message is in the room once.
// Before, the lane sent it again after one look, and the message arrived twice.
func TestOutboxSendStoredAfterItFailed(t *testing.T) {
	srv := matrixtest.NewServer(t)
	_, pw := srv.RegisterUser(t, "alice")
	bob := srv.Client(t, "bob")
	outbox := matrix.OutboxOptions{MinRetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond, ResumeDelay: 50 * time.Millisecond}
	for _, tc := range []struct {
		name    string
		restart bool // the client gives up (closed mid-request) and a new one resumes
	}{
		{"retry", false},
		{"restart", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := newLateStore(t, srv.URL, tc.restart)
			dbPath := filepath.Join(t.TempDir(), "alice.db")
			open := func() *matrix.Client {
				t.Helper()
				db, err := matrix.OpenDatabase(t.Context(), dbPath)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return newClientWith(t, matrix.Options{HomeserverURL: proxy.URL, Login: matrix.Password("alice", pw), DB: db, Outbox: outbox})
			}
			alice := open()
			room := sharedRoom(t, alice, bob)

			proxy.armed.Store(true)
			p, err := alice.Send(t.Context(), room, matrix.Text("case 4711: decision sent"), matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.restart {
				<-proxy.held
				alice.Close() // gives up on the request under way
				alice = open()
				p = alice.PendingItem(p.ID)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			evt, err := p.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-proxy.stored:
			default:
				t.Fatal("the held send was never stored; the test proved nothing")
			}
			if n := proxy.resends.Load(); n != 0 {
				t.Errorf("the outbox sent the item again %d times", n)
			}
			// A later message: once bob sees it, he sees everything before it.
			last, err := alice.Send(t.Context(), room, matrix.Text("after"), matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			lastEvt, err := last.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			matrixtest.WaitEvent(t, bob, room, func(e *event.Event) bool { return e.ID == lastEvt })
			assertExactlyOnceInOrder(t, room, roomBodies(t, bob, room, alice.UserID()), []string{"case 4711: decision sent", "after"})
			if got := roomEventOf(t, bob, room, "case 4711: decision sent"); got != evt {
				t.Errorf("Wait reported %s, the room holds %s", evt, got)
			}
		})
	}
}

// roomEventOf returns the ID of the newest message in room whose body is body.
func roomEventOf(t *testing.T, reader *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := reader.Messages(t.Context(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range resp.Chunk {
		_ = evt.Content.ParseRaw(evt.Type)
		if msg := evt.Content.AsMessage(); evt.Type == event.EventMessage && msg != nil && msg.Body == body {
			return evt.ID
		}
	}
	return ""
}
