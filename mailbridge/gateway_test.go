package mailbridge_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestMailArrivesInRoom: mail sent with go-smtp's client and with swaks arrives in the room
// its recipient routes to, plain and encrypted, with the sender and subject; a pattern route
// creates its room from the template; hostile HTML arrives sanitized.
func TestMailArrivesInRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver and sends mail into it")
	}
	sc := newEncryptedScene(t, mailbridge.Options{}, func(s *scene) []mailbridge.Route {
		return []mailbridge.Route{
			{Address: "case-{id}@cases.example", Room: "#case-{id}:" + s.srv.ServerName,
				Create: &matrix.RoomSpec{Preset: matrix.CaseRoom, Name: "Case {id}", Invite: []id.UserID{s.officer.UserID()}}},
			{Address: "postmaster@cases.example", Room: string(s.room)},
		}
	})
	srv, officer, plainRoom, secureRoom, addr, plain := sc.srv, sc.officer, sc.room, sc.secure, sc.addr, sc.inbox

	c := dial(t, addr)
	if err := send(c, "anna@agency.example", []string{"cases@agency.example"},
		mail("Anna Andersson <anna@agency.example>", "Sent with go-smtp", "gosmtp-1@agency.example", "Hello from Go.")); err != nil {
		t.Fatalf("go-smtp: %v", err)
	}
	got := plain.Wait(t, subjectLine("Sent with go-smtp"))
	if got.RoomID != plainRoom || !strings.Contains(got.Text(), "From: Anna Andersson <anna@agency.example>") || !strings.Contains(got.Text(), "Hello from Go.") {
		t.Errorf("in %s: %q", got.RoomID, got.Text())
	}

	out, err := swaks(t, "--server", addr, "--from", "system@agency.example", "--to", "secure@agency.example",
		"--header", "Subject: Sent with swaks", "--header", "From: Case System <system@agency.example>", "--body", "Hello from swaks.")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got = plain.Wait(t, subjectLine("Sent with swaks"))
	if got.RoomID != secureRoom || !got.Mautrix.WasEncrypted || !strings.Contains(got.Text(), "From: Case System <system@agency.example>") || !strings.Contains(got.Text(), "Hello from swaks.") {
		t.Errorf("in %s (encrypted %v): %q", got.RoomID, got.Mautrix.WasEncrypted, got.Text())
	}

	hostile, err := os.ReadFile(filepath.Join("testdata", "hostile.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := send(c, "mallory@evil.example", []string{"cases@agency.example"}, string(hostile)); err != nil {
		t.Fatal(err)
	}
	got = plain.Wait(t, subjectLine("hello"))
	if html := message(got).FormattedBody; html == "" || strings.Contains(html, "script") || strings.Contains(html, "onerror") || strings.Contains(html, "tracker.example") || strings.Contains(got.Text(), "alert") {
		t.Errorf("hostile HTML arrived as %q / %q", html, got.Text())
	}

	// Attachments follow the mail as files, encrypted in an encrypted room, under a safe name.
	mixed, err := os.ReadFile(filepath.Join("testdata", "mixed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@b.example", []string{"secure@agency.example"}, string(mixed)); err != nil {
		t.Fatal(err)
	}
	plain.Wait(t, subjectLine("report"))
	file := plain.Wait(t, func(e *matrix.Event) bool {
		return e.RoomID == secureRoom && e.Content.AsMessage().MsgType == event.MsgFile
	})
	fc := message(file)
	if !file.Mautrix.WasEncrypted || fc.File == nil || fc.Body != "evil.pdf" {
		t.Errorf("attachment arrived as %q (encrypted event %v, encrypted file %v)", fc.Body, file.Mautrix.WasEncrypted, fc.File != nil)
	}
	if data, err := officer.Download(t.Context(), fc, 0); err != nil || string(data) != "%PDF-1.4\n" {
		t.Errorf("attachment content %q, %v", data, err)
	}

	// A pattern route: the first mail creates the room from the template, inviting the
	// officer; once they have joined, the next mail is read there, encrypted.
	if err := send(c, "system@agency.example", []string{"case-4711@cases.example"}, mail("system@agency.example", "Case opened", "case-4711-1@agency.example", "New case.")); err != nil {
		t.Fatal(err)
	}
	alias := id.RoomAlias("#case-4711:" + srv.ServerName)
	var caseRoom id.RoomID
	matrixtest.Eventually(t, func() error {
		caseRoom, err = officer.Join(t.Context(), string(alias))
		return err
	})
	var name event.RoomNameEventContent
	if err := officer.Mautrix().StateEvent(t.Context(), caseRoom, event.StateRoomName, "", &name); err != nil || name.Name != "Case 4711" {
		t.Errorf("the case room is named %q (%v), want the template's name with the capture", name.Name, err)
	}
	if err := send(c, "system@agency.example", []string{"case-4711+update@cases.example"}, mail("system@agency.example", "Case updated", "case-4711-2@agency.example", "Update.")); err != nil {
		t.Fatal(err)
	}
	got = plain.Wait(t, subjectLine("Case updated"))
	if got.RoomID != caseRoom || !got.Mautrix.WasEncrypted {
		t.Errorf("case mail in %s (encrypted %v), want %s", got.RoomID, got.Mautrix.WasEncrypted, caseRoom)
	}
}

// TestSMTPReplies: each refusal has its exact reply code, a refused recipient does not refuse
// the others, and a reused connection starts each mail clean.
func TestSMTPReplies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	other := roomWith(t, bot, officer, false)
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "cases@agency.example", Room: string(room)},
		mailbridge.Route{Address: "other@agency.example", Room: string(other)},
		mailbridge.Route{Address: "registry@agency.example", Room: string(room), AllowSenders: []string{"@agency.example"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	const maxBytes = 64 << 10
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, MaxMessageBytes: maxBytes, MaxRecipients: 3, MaxLineLength: 16 << 10})
	inbox := matrixtest.NewRecorder(t, officer, "")
	c := dial(t, addr)

	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("EHLO does not advertise %s", ext)
		}
	}
	if size, ok := c.MaxMessageSize(); !ok || size != maxBytes {
		t.Errorf("SIZE %d, %v; want %d", size, ok, maxBytes)
	}

	wantCode(t, "unknown recipient", send(c, "a@agency.example", []string{"nobody@agency.example"}, "x"), 550, smtp.EnhancedCode{5, 1, 1})
	wantCode(t, "sender not on the allow-list", send(c, "a@elsewhere.example", []string{"registry@agency.example"}, mail("a@elsewhere.example", "not allowed", "", "x")), 550, smtp.EnhancedCode{5, 7, 1})
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "SIZE too large", c.Mail("a@agency.example", &smtp.MailOptions{Size: maxBytes + 1}), 552, smtp.EnhancedCode{5, 3, 4})
	wantCode(t, "too large", send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "big", "", strings.Repeat(strings.Repeat("x", 998)+"\r\n", maxBytes/1000+1))), 552, smtp.EnhancedCode{5, 3, 4})
	wantCode(t, "after too large, the connection is in sync", c.Rcpt("cases@agency.example", nil), 502, smtp.EnhancedCode{5, 5, 1})
	var fields strings.Builder
	for i := range 1001 {
		fmt.Fprintf(&fields, "X-Field-%d: x\r\n", i)
	}
	wantCode(t, "1001 header fields", send(c, "a@agency.example", []string{"cases@agency.example"}, fields.String()+mail("a@agency.example", "fields", "", "x")), 552, smtp.EnhancedCode{5, 3, 4})
	wantCode(t, "malformed header", send(c, "a@agency.example", []string{"cases@agency.example"}, "this is no header\r\n\r\nbody\r\n"), 550, smtp.EnhancedCode{5, 6, 0})

	// Too many recipients: the fourth is refused for now, the three before it stand.
	if err := c.Mail("a@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"cases@agency.example", "cases+x@agency.example", "other@agency.example"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	wantCode(t, "fourth recipient", c.Rcpt("cases+y@agency.example", nil), 452, smtp.EnhancedCode{4, 5, 3})
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}

	// A refused recipient does not refuse the others, and two recipients for one room post
	// once there. The same connection, after RSET and after refusals, starts clean: the mail
	// goes only to this transaction's recipients.
	if err := c.Mail("a@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "unknown among known", c.Rcpt("nobody@agency.example", nil), 550, smtp.EnhancedCode{5, 1, 1})
	for _, r := range []string{"cases@agency.example", "cases+4711@agency.example", "other@agency.example"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(mail("a@agency.example", "Two rooms", "two-rooms@agency.example", "once per room")))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@agency.example", []string{"other@agency.example"}, mail("a@agency.example", "Only other", "only-other@agency.example", "second mail")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Marker", "marker@agency.example", "last")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == other && subjectLine("Only other")(e) })
	inbox.Wait(t, func(e *matrix.Event) bool { return e.RoomID == room && subjectLine("Marker")(e) })
	if n := count(inbox, func(e *matrix.Event) bool { return e.RoomID == room && subjectLine("Two rooms")(e) }); n != 1 {
		t.Errorf("the mail is in the cases room %d times, want once", n)
	}
	if n := count(inbox, func(e *matrix.Event) bool { return e.RoomID == other && subjectLine("Two rooms")(e) }); n != 1 {
		t.Errorf("the mail is in the other room %d times, want once", n)
	}
	if n := count(inbox, func(e *matrix.Event) bool { return e.RoomID == room && subjectLine("Only other")(e) }); n != 0 {
		t.Errorf("a recipient of the mail before leaked into the next one")
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}

	// A line longer than MaxLineLength: a clear 500 5.5.2, never a plain 554.
	long := dial(t, addr)
	wantCode(t, "line too long", send(long, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "long", "", strings.Repeat("y", 20<<10))), 500, smtp.EnhancedCode{5, 5, 2})

	// SMTP smuggling: only <CR><LF>.<CR><LF> ends the data, so commands hidden behind a bare
	// <LF>.<LF> or <LF>.<CR><LF> stay text of the one mail, and no second mail is made of them.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn := textproto.NewConn(raw)
	smuggled := "EHLO x\r\nMAIL FROM:<a@agency.example>\r\nRCPT TO:<other@agency.example>\r\nDATA\r\n" +
		"From: a@agency.example\r\nSubject: Smuggler\r\n\r\nfirst\n.\nMAIL FROM:<evil@agency.example>\nRCPT TO:<cases@agency.example>\nDATA\n" +
		"Subject: Smuggled\n\nsecond\n.\r\nQUIT\r\n.\r\n"
	if _, err := io.WriteString(raw, smuggled); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{220, 250, 250, 250, 354, 250} {
		if _, _, err := conn.ReadResponse(want); err != nil {
			t.Fatalf("smuggling: want %d: %v", want, err)
		}
	}
	got := inbox.Wait(t, subjectLine("Smuggler"))
	if got.RoomID != other || !strings.Contains(got.Text(), "Subject: Smuggled") {
		t.Errorf("the smuggled text is not part of the mail: %q", got.Text())
	}
	if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Marker 2", "marker-2@agency.example", "last")); err != nil {
		t.Fatal(err)
	}
	inbox.Wait(t, subjectLine("Marker 2"))
	if n := count(inbox, func(e *matrix.Event) bool { return subjectLine("Smuggled")(e) && !subjectLine("Smuggler")(e) }); n != 0 {
		t.Errorf("a smuggled mail was posted %d times", n)
	}

	// swaks, pipelining: the unknown recipient is refused with 550 5.1.1.
	out, err := swaks(t, "--server", addr, "--pipeline", "--from", "a@agency.example", "--to", "nobody@agency.example", "--body", "x")
	if err == nil || !strings.Contains(out, "550 5.1.1") {
		t.Errorf("swaks to an unknown recipient: %v\n%s", err, out)
	}
}

// TestSpoolCannotCommit: when the spool cannot store a mail, the client is told 451 4.3.0 (try
// again later), never 250 and never a permanent 554. The fault is injected by closing the
// spool's database under the running gateway.
func TestSpoolCannotCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: "!nowhere:" + srv.ServerName})
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, "spool.db")
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: db})
	db.Close()
	c := dial(t, addr)
	wantCode(t, "spool closed", send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "lost?", "", "x")), 451, smtp.EnhancedCode{4, 3, 0})
}

// TestSameMailPostedOnce: a mail delivered twice (a client that retried after a lost 250, a
// relay) is posted once; without a Message-ID, the same content counts as the same mail.
func TestSameMailPostedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	sc := newScene(t, mailbridge.Options{})
	inbox := sc.inbox
	withID := mail("a@agency.example", "Twice", "twice@agency.example", "the same mail")
	withoutID := mail("a@agency.example", "Twice without ID", "", "the same content")
	for range 2 {
		c := dial(t, sc.addr) // a retry comes on a new connection
		for _, m := range []string{withID, withoutID} {
			if err := send(c, "a@agency.example", []string{"cases@agency.example"}, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := dial(t, sc.addr)
	if err := send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Marker", "marker@agency.example", "after")); err != nil {
		t.Fatal(err)
	}
	// Mail is posted in the order it was spooled, and one room's posts go out in order, so
	// when the marker is there the duplicates would be too.
	inbox.Wait(t, subjectLine("Marker"))
	for _, s := range []string{"Twice", "Twice without ID"} {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%q posted %d times, want once", s, n)
		}
	}
}

// TestMailSurvivesOutage: a mail answered with 250 while the homeserver is down arrives once
// it is back, even when the gateway is restarted in between.
func TestMailSurvivesOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("stops and starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	room := roomWith(t, bot, officer, false)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, "spool.db")
	first, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: db})

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	if err := send(c, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "During the outage", "outage@agency.example", "kept safe")); err != nil {
		t.Fatalf("mail during the outage: %v", err)
	}
	c.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	startGateway(t, mailbridge.Options{Client: bot, Router: router, DB: db})
	inbox := matrixtest.NewRecorder(t, officer, room)
	inbox.Wait(t, subjectLine("During the outage"))
	p, err := bot.Send(t.Context(), room, matrix.Text("marker"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	inbox.WaitText(t, "marker")
	if n := count(inbox, subjectLine("During the outage")); n != 1 {
		t.Errorf("posted %d times, want once", n)
	}
}

// TestConnectionLimit: a connection over MaxConnections is answered 421 4.7.0 (try later) and
// closed; once a connection ends, a new one is served again.
func TestConnectionLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: "!r:" + srv.ServerName})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, MaxConnections: 1})
	first := dial(t, addr)
	greeting := func() (int, string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, "", err
		}
		defer c.Close()
		return textproto.NewConn(c).ReadResponse(0)
	}
	code, msg, _ := greeting()
	if code != 421 || !strings.HasPrefix(msg, "4.7.0") {
		t.Fatalf("connection over the limit greeted %d %q, want 421 4.7.0", code, msg)
	}
	if err := first.Quit(); err != nil {
		t.Fatal(err)
	}
	matrixtest.Eventually(t, func() error {
		if code, msg, err := greeting(); code != 220 {
			return fmt.Errorf("greeted %d %q (%v) after the first connection ended", code, msg, err)
		}
		return nil
	})
}

// TestUndeliverableMailIsDeadLettered: a mail whose room does not exist is retried until
// DeadLetterAfter, then waits as dead in the spool, listed with why; after the admin fixes the
// cause, Retry posts it.
func TestUndeliverableMailIsDeadLettered(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	srv := matrixtest.NewServer(t)
	bot := srv.NewClient(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	alias := id.RoomAlias("#not-yet:" + srv.ServerName)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(alias)})
	if err != nil {
		t.Fatal(err)
	}
	g, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, DeadLetterAfter: time.Millisecond})
	if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Nowhere yet", "nowhere@agency.example", "x")); err != nil {
		t.Fatal(err)
	}
	var dead mailbridge.SpooledMail
	matrixtest.Eventually(t, func() error {
		list, err := g.Undelivered(t.Context())
		if err != nil {
			return err
		}
		if len(list) != 1 || !list[0].Dead {
			return fmt.Errorf("undelivered: %+v", list)
		}
		dead = list[0]
		return nil
	})
	if dead.Room != string(alias) || dead.Recipient != "cases@agency.example" || dead.MailFrom != "a@agency.example" || dead.Attempts != 1 || dead.LastError == "" {
		t.Errorf("dead letter %+v", dead)
	}
	if err := g.Retry(t.Context(), dead.ID+1); !errors.Is(err, mailbridge.ErrNotInSpool) {
		t.Errorf("Retry of an unknown ID: %v", err)
	}

	room := roomWith(t, bot, officer, false)
	if err := bot.SetAlias(t.Context(), alias, room); err != nil {
		t.Fatal(err)
	}
	if err := g.Retry(t.Context(), dead.ID); err != nil {
		t.Fatal(err)
	}
	inbox := matrixtest.NewRecorder(t, officer, room)
	inbox.Wait(t, subjectLine("Nowhere yet"))
	matrixtest.Eventually(t, func() error {
		if list, err := g.Undelivered(t.Context()); err != nil || len(list) != 0 {
			return fmt.Errorf("undelivered after retry: %+v, %v", list, err)
		}
		return nil
	})
}
