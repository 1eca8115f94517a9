package mailbridge_test

import (
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// rawSMTP is a connection to the gateway that speaks the protocol by hand.
type rawSMTP struct {
	t  *testing.T
	c  net.Conn
	tc *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawSMTP{t: t, c: c, tc: textproto.NewConn(c)}
	r.expect("greeting", 220)
	return r
}

// write sends bytes as they are, all at once (pipelined).
func (r *rawSMTP) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// expect reads one reply per code, in order, and fails unless each has its code.
func (r *rawSMTP) expect(what string, codes ...int) {
	r.t.Helper()
	for i, want := range codes {
		code, msg, err := r.tc.ReadResponse(0)
		if code != want {
			r.t.Fatalf("%s: reply %d is %d %q (%v), want %d", what, i+1, code, msg, err, want)
		}
	}
}

// TestSMTPHardening: the limits and hostile input at the SMTP level, each with its reply, on
// connections that stay in sync: open-relay attempts, postmaster, per-sender rate, MIME depth
// and part count, header size and count, a 20 KB header line, 8-bit headers, bare LF,
// smuggling with every bare-LF/CR end-of-data look-alike, pipelined dialogues and reuse of
// one connection for many mails with and without RSET.
func TestSMTPHardening(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	other := roomWith(t, bot, officer, false)
	postmaster := roomWith(t, bot, officer, false)
	router, err := mailbridge.NewRouter(
		mailbridge.Route{Address: "cases@agency.example", Room: string(room), AllowSenders: []string{"@agency.example", "@bulk.example"}},
		mailbridge.Route{Address: "other@agency.example", Room: string(other)},
		mailbridge.Route{Address: "desk@second.example", Room: string(other)},
	)
	if err != nil {
		t.Fatal(err)
	}
	// agency.example's mail comes from here (SPF), which proves its From for the allow-list.
	zone := startDNS(t)
	zone.TXT("agency.example", "v=spf1 ip4:127.0.0.1 -all")
	_, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router, SenderRate: 3, PostmasterRoom: string(postmaster), Resolver: mailbridge.DNSServer(zone.Addr)})
	inbox := matrixtest.NewRecorder(t, officer, "")
	c := dial(t, addr)
	in := func(room id.RoomID, subject string) func(*matrix.Event) bool {
		return func(e *matrix.Event) bool { return e.RoomID == room && subjectLine(subject)(e) }
	}

	// Open relay: a domain not routed is refused as relaying, a mailbox not routed in a
	// routed domain as unknown, and the old relay tricks with it.
	if err := c.Mail("a@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "relay to another domain", c.Rcpt("victim@elsewhere.example", nil), 550, smtp.EnhancedCode{5, 7, 1})
	wantCode(t, "relay by %-hack", c.Rcpt("victim%elsewhere.example@agency.example", nil), 550, smtp.EnhancedCode{5, 1, 1})
	wantCode(t, "relay by bang path", c.Rcpt("elsewhere.example!victim@agency.example", nil), 550, smtp.EnhancedCode{5, 1, 1})
	wantCode(t, "postmaster of another domain", c.Rcpt("postmaster@elsewhere.example", nil), 550, smtp.EnhancedCode{5, 7, 1})
	if err := c.Rcpt("<@agency.example:victim@elsewhere.example>", nil); err == nil {
		t.Error("a source route was accepted")
	}
	// postmaster@ of every routed domain reaches PostmasterRoom from any sender, although the
	// domain's first route has an allow-list.
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "someone@outside.example", []string{"postmaster@agency.example", "POSTMASTER@second.example"},
		mail("someone@outside.example", "To the postmaster", "pm-1@outside.example", "hello")); err != nil {
		t.Fatalf("postmaster: %v", err)
	}
	inbox.Wait(t, in(postmaster, "To the postmaster"))

	// Per-sender rate: the fourth mail in a minute from one sender waits (450 4.7.1); another
	// sender is not affected.
	for i := range 3 {
		if err := c.Mail("busy@agency.example", nil); err != nil {
			t.Fatalf("MAIL %d: %v", i+1, err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, "fourth mail in a minute", c.Mail("busy@agency.example", nil), 450, smtp.EnhancedCode{4, 7, 1})
	if err := c.Mail("calm@agency.example", nil); err != nil {
		t.Errorf("another sender: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}

	// MIME: 1000 levels deep, mail attached in mail 60 deep and 2000 parts are refused; 30
	// parts are fine.
	nested := "From: a@agency.example\r\nSubject: deep\r\n"
	var tail strings.Builder
	for i := range 1000 {
		nested += fmt.Sprintf("Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
		fmt.Fprintf(&tail, "\r\n--b%d--\r\n", 999-i)
	}
	nested += "Content-Type: text/plain\r\n\r\ninnermost" + tail.String()
	wantCode(t, "1000 levels deep", send(c, "deep@agency.example", []string{"other@agency.example"}, nested), 552, smtp.EnhancedCode{5, 3, 4})
	attached := "From: a@agency.example\r\nSubject: innermost\r\n\r\nx\r\n"
	for range 60 {
		attached = "From: a@agency.example\r\nSubject: wrapper\r\nContent-Type: message/rfc822\r\n\r\n" + attached
	}
	wantCode(t, "mail attached in mail 60 deep", send(c, "deep2@agency.example", []string{"other@agency.example"}, attached), 552, smtp.EnhancedCode{5, 3, 4})
	parts := func(n int) string {
		var b strings.Builder
		b.WriteString("From: a@agency.example\r\nSubject: " + fmt.Sprint(n) + " parts\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n")
		for i := range n {
			fmt.Fprintf(&b, "--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
		}
		b.WriteString("--p--\r\n")
		return b.String()
	}
	wantCode(t, "2000 parts", send(c, "parts@agency.example", []string{"other@agency.example"}, parts(2000)), 552, smtp.EnhancedCode{5, 3, 4})
	if err := send(c, "parts@agency.example", []string{"other@agency.example"}, parts(30)); err != nil {
		t.Fatalf("30 parts: %v", err)
	}
	inbox.Wait(t, in(other, "30 parts"))

	// Headers: a 300 KiB header block is refused; 500 fields and a 20 KB line are accepted
	// and arrive.
	var big, many strings.Builder
	for i := range 300 {
		fmt.Fprintf(&big, "X-Filler-%d: %s\r\n", i, strings.Repeat("f", 1000))
	}
	wantCode(t, "300 KiB of header", send(c, "hdr@agency.example", []string{"other@agency.example"}, big.String()+mail("a@agency.example", "big header", "", "x")), 552, smtp.EnhancedCode{5, 3, 4})
	for i := range 500 {
		fmt.Fprintf(&many, "X-Field-%d: x\r\n", i)
	}
	if err := send(c, "hdr@agency.example", []string{"other@agency.example"}, many.String()+mail("a@agency.example", "500 fields", "", "x")); err != nil {
		t.Fatalf("500 header fields: %v", err)
	}
	longLine := "X-Long: " + strings.Repeat("l", 20<<10) + "\r\n" + mail("a@agency.example", "Long header line", "", "x")
	if err := send(c, "hdr2@agency.example", []string{"other@agency.example"}, longLine); err != nil {
		t.Fatalf("20 KB header line: %v", err)
	}
	inbox.Wait(t, in(other, "500 fields"))
	inbox.Wait(t, in(other, "Long header line"))

	// A first line that continues nothing would continue the gateway's own fields on top.
	wantCode(t, "folded first line", send(c, "fold@agency.example", []string{"other@agency.example"}, " ; dmarc=pass header.from=bank.example\r\n"+mail("a@agency.example", "folded", "", "x")), 550, smtp.EnhancedCode{5, 6, 0})

	// 8-bit headers without SMTPUTF8: UTF-8 as it is, and Latin-1 shown best effort.
	if err := send(c, "utf8@agency.example", []string{"other@agency.example"}, mail("Åsa Öberg <asa@agency.example>", "Ärende åäö", "", "x")); err != nil {
		t.Fatalf("UTF-8 header: %v", err)
	}
	if err := send(c, "latin1@agency.example", []string{"other@agency.example"}, mail("a@agency.example", "Latin-1 \xc4rende", "", "x")); err != nil {
		t.Fatalf("Latin-1 header: %v", err)
	}
	got := inbox.Wait(t, in(other, "Ärende åäö"))
	if !strings.Contains(got.Text(), "Åsa Öberg") {
		t.Errorf("UTF-8 header arrived as %q", got.Text())
	}
	// (the converter reads 8-bit header text that is not UTF-8 as Windows-1252, and says so)
	inbox.Wait(t, func(e *matrix.Event) bool { return strings.Contains(e.Text(), "Subject: Latin-1 Ärende") })

	// Bare LF line ends: accepted and read.
	bare := "From: a@agency.example\nSubject: Bare LF\n\nline one\nline two\n"
	if err := send(c, "lf@agency.example", []string{"other@agency.example"}, bare); err != nil {
		t.Fatalf("bare LF: %v", err)
	}
	if got := inbox.Wait(t, in(other, "Bare LF")); !strings.Contains(got.Text(), "line one\nline two") {
		t.Errorf("bare LF mail arrived as %q", got.Text())
	}

	// Smuggling: each look-alike of the end of data hides a second mail. On one pipelined
	// connection, each whole dialogue gets exactly the replies of one mail, and the hidden
	// commands stay text of the mail they are in.
	r := dialRaw(t, addr)
	r.write("EHLO client.test\r\n")
	r.expect("EHLO", 250)
	for i, fake := range []string{"\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"} {
		subject := fmt.Sprintf("Smuggler %d", i)
		r.write(fmt.Sprintf("MAIL FROM:<smuggler%d@agency.example>\r\nRCPT TO:<other@agency.example>\r\nDATA\r\n", i) +
			"From: a@agency.example\r\nSubject: " + subject + "\r\n\r\nfirst" + fake +
			"MAIL FROM:<evil@agency.example>\r\nRCPT TO:<cases@agency.example>\r\nDATA\r\nSubject: Smuggled\r\n\r\nsecond\r\n.\r\n")
		r.expect(subject, 250, 250, 354, 250)
	}
	// A pipelined batch: an unknown recipient among known ones, RSET between mails, and a
	// transaction abandoned with RSET before DATA.
	r.write("MAIL FROM:<pipe@agency.example>\r\nRCPT TO:<nobody@agency.example>\r\nRCPT TO:<other@agency.example>\r\nDATA\r\n" +
		"From: a@agency.example\r\nSubject: Pipelined 1\r\n\r\nx\r\n.\r\n" +
		"RSET\r\nMAIL FROM:<pipe@agency.example>\r\nRCPT TO:<cases@agency.example>\r\nRSET\r\n" +
		"MAIL FROM:<pipe2@agency.example>\r\nRCPT TO:<other@agency.example>\r\nDATA\r\nFrom: a@agency.example\r\nSubject: Pipelined 2\r\n\r\ny\r\n.\r\nQUIT\r\n")
	r.expect("pipelined batch", 250, 550, 250, 354, 250, 250, 250, 250, 250, 250, 250, 354, 250, 221)

	// SMTPUTF8 and 8BITMIME as MAIL parameters: a UTF-8 envelope sender and an 8-bit body.
	u := dialRaw(t, addr)
	u.write("EHLO client.test\r\nMAIL FROM:<åsa@agency.example> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<other@agency.example>\r\nDATA\r\n" +
		"From: Åsa <åsa@agency.example>\r\nSubject: UTF-8 envelope\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhej då\r\n.\r\nQUIT\r\n")
	u.expect("SMTPUTF8 mail", 250, 250, 250, 354, 250, 221)
	if got := inbox.Wait(t, in(other, "UTF-8 envelope")); !strings.Contains(got.Text(), "hej då") || !strings.Contains(got.Text(), "åsa@agency.example") {
		t.Errorf("SMTPUTF8 mail arrived as %q", got.Text())
	}

	// Many mails on one go-smtp connection, every other one after RSET: each in its room once.
	for i := range 10 {
		to, from := "other@agency.example", fmt.Sprintf("reuse%d@agency.example", i) // one sender each: SenderRate is 3
		if i%2 == 1 {
			to = "cases@agency.example"
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
		}
		if err := send(c, from, []string{to}, mail("a@agency.example", fmt.Sprintf("Reuse %d", i), fmt.Sprintf("reuse-%d@agency.example", i), "x")); err != nil {
			t.Fatalf("reuse %d: %v", i, err)
		}
	}
	inbox.Wait(t, in(other, "Pipelined 2"))
	inbox.Wait(t, in(other, "Reuse 8"))
	for i := range 6 {
		got := inbox.Wait(t, in(other, fmt.Sprintf("Smuggler %d", i)))
		if !strings.Contains(got.Text(), "Subject: Smuggled") {
			t.Errorf("smuggler %d: the hidden mail is not text of the first: %q", i, got.Text())
		}
	}
	if n := count(inbox, func(e *matrix.Event) bool {
		return subjectLine("Smuggled")(e) && !strings.Contains(e.Text(), "Subject: Smuggler")
	}); n != 0 {
		t.Errorf("a smuggled mail was posted %d times", n)
	}
	inbox.Wait(t, in(room, "Reuse 9"))
	if n := count(inbox, func(e *matrix.Event) bool { return e.RoomID == room && subjectLine("Pipelined 2")(e) }); n != 0 {
		t.Error("a recipient of an abandoned transaction got the next mail")
	}
	for i := 0; i < 10; i += 2 {
		if n := count(inbox, in(other, fmt.Sprintf("Reuse %d", i))); n != 1 {
			t.Errorf("Reuse %d posted %d times in its room", i, n)
		}
		if n := count(inbox, in(room, fmt.Sprintf("Reuse %d", i))); n != 0 {
			t.Errorf("Reuse %d leaked into the other room", i)
		}
	}
}
