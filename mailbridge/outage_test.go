package mailbridge_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// outageEnv shortens TestHomeserverOutage's outage (a Go duration) for repeated runs; the
// done-when is 60 s, the default.
const outageEnv = "SAMTAL_MAIL_OUTAGE"

// TestHomeserverOutage: the homeserver is stopped for 60 s while mail arrives over 2
// connections (about 10 a second): every mail gets 250 from the spool meanwhile, and after the server is back
// every one arrives in the room, once.
func TestHomeserverOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("stops the homeserver for 60 s")
	}
	outage := 60 * time.Second
	if v := os.Getenv(outageEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", outageEnv, err)
		}
		outage = d
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	inbox := matrixtest.NewRecorder(t, officer, room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	g, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router})

	var mu sync.Mutex
	var sent []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for conn := range 2 {
		sc := dial(t, addr)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond): // about 10 mails/s over the 2
				}
				subject := fmt.Sprintf("Outage %d-%d", conn, i)
				if err := send(sc, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", subject, subject+"@agency.example", "x")); err != nil {
					t.Errorf("%s during the outage: %v, want 250", subject, err)
					return
				}
				mu.Lock()
				sent = append(sent, subject)
				mu.Unlock()
			}
		})
	}
	sentSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(sent)
	}
	matrixtest.Eventually(t, func() error {
		if n := sentSoFar(); n < 20 {
			return fmt.Errorf("%d mails sent before the outage", n)
		}
		return nil
	})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	before := sentSoFar()
	time.Sleep(outage) // the outage itself: mail goes on arriving meanwhile
	during := sentSoFar() - before
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a little load after it, too
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	if during == 0 {
		t.Fatal("no mail was accepted during the outage")
	}
	// The reader's own sync backs off while the server is down (up to a minute), so the wait
	// fails only when nothing new arrived for a long time, not after a fixed time.
	waitAll(t, inbox, sent, func(missing []string) string {
		return onServer(t, officer, room, missing) + "; " + outboxNotSent(bot) + "; " + sentNotOnServer(officer, bot) + "; " + spoolNotDone(g)
	})
	for _, s := range sent {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%s posted %d times, want once", s, n)
		}
	}
	t.Logf("%d mails, %d of them accepted during the %v outage", len(sent), during, outage)
}

// waitAll waits until every subject is in the recorder, and fails the test only when no new
// event arrived for five minutes.
// explain, given the subjects still missing, says what is known of them (for the failure).
func waitAll(t *testing.T, inbox *matrixtest.Recorder, subjects []string, explain func(missing []string) string) {
	t.Helper()
	last, since := -1, time.Now()
	for {
		events := inbox.Events()
		var missing []string
		for _, s := range subjects {
			if count(inbox, subjectLine(s)) == 0 {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return
		}
		if len(events) != last {
			last, since = len(events), time.Now()
		} else if time.Since(since) > 5*time.Minute {
			t.Fatalf("%d of %d mails missing, and no new event for five minutes: %s", len(missing), len(subjects), explain(missing))
		}
		select {
		case <-t.Context().Done():
			t.Fatal("test ended while waiting")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// onServer says, for a failure, which of the missing subjects the homeserver has in room's
// history (then the reader's sync missed them) and which it has not (then the gateway or its
// outbox did not post them).
func onServer(t *testing.T, reader *matrix.Client, room id.RoomID, missing []string) string {
	found := map[string]bool{}
	from := ""
	for page := 0; page < 50; page++ {
		resp, err := reader.Mautrix().Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return fmt.Sprintf("%q (history not readable: %v)", missing, err)
		}
		for _, e := range resp.Chunk {
			if e.Type != event.EventMessage {
				continue
			}
			_ = e.Content.ParseRaw(e.Type)
			for _, s := range missing {
				if strings.Contains(e.Content.AsMessage().Body, "Subject: "+s+"\n") {
					found[s] = true
				}
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	var there, gone []string
	for _, s := range missing {
		if found[s] {
			there = append(there, s)
		} else {
			gone = append(gone, s)
		}
	}
	return fmt.Sprintf("in the room's history on the server but not synced: %q; not on the server: %q", there, gone)
}

// outboxNotSent lists, for a failure, the items of c's outbox that are not sent, with their
// state, attempts and error (never content).
// sentNotOnServer lists the outbox items recorded as sent whose events the reader cannot get
// from the server (for a failure message): a homeserver that answered a send and then lost
// its event, or an item taken for one found in the room.
func sentNotOnServer(reader, sender *matrix.Client) string {
	items, err := matrix.ListOutbox(context.Background(), sender.Database(), sender.SessionName(), "sent")
	if err != nil {
		return fmt.Sprintf("outbox not readable: %v", err)
	}
	var out []string
	for _, it := range items {
		if _, err := reader.Mautrix().GetEvent(context.Background(), it.Room, it.EventID); err != nil {
			out = append(out, fmt.Sprintf("item %d (%s, %d attempts, sent %s): %v", it.ID, it.EventID, it.Attempts, it.SentAt.Format("15:04:05.000"), err))
		}
	}
	return fmt.Sprintf("%d items sent, of which the server has not: %q", len(items), out)
}

// spoolNotDone lists the spool's deliveries not done (for a failure message).
func spoolNotDone(g *mailbridge.Gateway) string {
	list, err := g.Undelivered(context.Background())
	if err != nil {
		return fmt.Sprintf("spool not readable: %v", err)
	}
	var out []string
	for _, m := range list {
		out = append(out, fmt.Sprintf("mail %d %s after %d attempts: %s", m.ID, m.State(), m.Attempts, m.LastError))
	}
	return fmt.Sprintf("spool deliveries not done: %q", out)
}

func outboxNotSent(c *matrix.Client) string {
	var out []string
	for _, state := range []string{"pending", "failed"} {
		items, err := matrix.ListOutbox(context.Background(), c.Database(), c.SessionName(), state)
		if err != nil {
			return fmt.Sprintf("outbox not readable: %v", err)
		}
		for _, it := range items {
			out = append(out, fmt.Sprintf("item %d %s after %d attempts: %v", it.ID, it.State, it.Attempts, it.Err))
		}
	}
	return fmt.Sprintf("outbox items not sent: %q", out)
}
