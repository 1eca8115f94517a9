package mailbridge_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/internal/storage/storagetest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestRetentionDeletesDeliveredMail: once a mail is delivered and its retention has passed,
// its raw message is gone from the spool's database file (and its log), while the gateway
// still threads a reply to it and still posts it once when it comes again. Dead mail is kept,
// content and all, until an admin drops it; then it is gone from the file too.
func TestRetentionDeletesDeliveredMail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	mailbridge.SetRetentionSweep(t, 20*time.Millisecond)
	path := filepath.Join(t.TempDir(), "spool.db")
	db, err := matrix.OpenDatabase(t.Context(), path) // the spool's own: the outbox keeps its content elsewhere
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := newStage(t)
	s.start(t, mailbridge.Options{DB: db, Retention: -1, DeadLetterAfter: time.Millisecond}, s.room,
		mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)},
		mailbridge.Route{Address: "nowhere@agency.example", Room: "#no-such-room:" + s.srv.ServerName})

	const secret, kept = "RETAINED-4711-personnummer", "DEADLETTER-4712-personnummer"
	first := mail("a@agency.example", "Case 4711", "case-4711@agency.example", secret)
	s.send(t, "a@agency.example", first)
	root := s.inbox.Wait(t, subjectLine("Case 4711"))
	if err := send(dial(t, s.addr), "a@agency.example", []string{"nowhere@agency.example"}, mail("a@agency.example", "Lost", "lost@agency.example", kept)); err != nil {
		t.Fatal(err)
	}
	var dead int64
	matrixtest.Eventually(t, func() error {
		list, err := s.g.Undelivered(t.Context())
		if err != nil || len(list) != 1 || !list[0].Dead {
			return fmt.Errorf("undelivered: %+v, %v; want the mail to nowhere dead", list, err)
		}
		dead = list[0].ID
		return nil
	})
	matrixtest.Eventually(t, func() error {
		file := storagetest.OnDisk(t, path)
		if bytes.Contains(file, []byte(secret)) {
			return errors.New("the delivered mail is still in the spool's database file")
		}
		return nil
	})
	if file := storagetest.OnDisk(t, path); !bytes.Contains(file, []byte(kept)) {
		t.Fatal("the dead mail is not in the spool's file (or the file is not read)")
	}

	reply := "In-Reply-To: <case-4711@agency.example>\r\n" + mail("b@agency.example", "Re: Case 4711", "reply@agency.example", "an answer")
	s.send(t, "b@agency.example", reply)
	if rel := message(s.inbox.Wait(t, subjectLine("Re: Case 4711"))).RelatesTo; rel == nil || rel.Type != event.RelThread || rel.EventID != root.ID {
		t.Errorf("the reply to a deleted mail is not in its thread: %+v", rel)
	}
	s.send(t, "a@agency.example", first) // a relay delivers it again
	s.send(t, "a@agency.example", mail("a@agency.example", "Marker", "marker@agency.example", "after"))
	s.inbox.Wait(t, subjectLine("Marker"))
	if n := count(s.inbox, subjectLine("Case 4711")); n != 1 {
		t.Errorf("the mail delivered again after its deletion was posted %d times, want once", n)
	}

	if err := s.g.Drop(t.Context(), dead); err != nil {
		t.Fatal(err)
	}
	if err := s.g.Drop(t.Context(), dead); !errors.Is(err, mailbridge.ErrNotInSpool) {
		t.Errorf("drop again: %v, want ErrNotInSpool", err)
	}
	matrixtest.Eventually(t, func() error {
		if list, err := s.g.Undelivered(t.Context()); err != nil || len(list) != 0 {
			return fmt.Errorf("undelivered after drop: %+v, %v", list, err)
		}
		if bytes.Contains(storagetest.OnDisk(t, path), []byte(kept)) {
			return errors.New("the dropped mail is still in the spool's database file")
		}
		return nil
	})
}
