package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestTail prints what bob and the account itself send while tail runs; a second tail, in
// JSON, starts where the first stopped and prints what came in between.
func TestTail(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)
	if _, err := bob.SendText(t.Context(), room, "before tail"); err != nil {
		t.Fatal(err)
	}

	e, out, errOut := testEnv()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"tail", string(room)}) }()
	waitFor(t, func() bool { return strings.Contains(errOut.String(), "receiving messages") }, done, errOut)

	if _, err := bob.SendText(t.Context(), room, "hej från bob\nrad två"); err != nil {
		t.Fatal(err)
	}
	mustSamtal(t, "send", string(room), "from alice's script")
	waitFor(t, func() bool { return strings.Contains(out.String(), "from alice's script") }, done, errOut)
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("tail exited %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+ ` + regexp.QuoteMeta(string(bob.UserID)) + ` hej från bob↵rad två$`),
		regexp.MustCompile(`^\S+ ` + regexp.QuoteMeta(string(alice)) + ` from alice's script$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("tail printed %d lines, want %d (nothing from before it started):\n%s", len(lines), len(want), out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d is %q, want %s", i, lines[i], re)
		}
	}

	// While no tail runs, bob writes; the next tail picks up where the last one stopped.
	sent, err := bob.SendText(t.Context(), room, "while you were away")
	if err != nil {
		t.Fatal(err)
	}
	e, out, errOut = testEnv()
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go func() { done <- run(ctx, e, []string{"tail", "--json"}) }()
	waitFor(t, func() bool { return strings.Contains(out.String(), "while you were away") }, done, errOut)
	cancel()
	<-done
	// The first tail may have been stopped before it stored its last batch: at least once, so
	// that batch comes again, before what came in between.
	var got tailLine
	for line := range strings.Lines(out.String()) {
		var l tailLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("tail --json printed %q: %v", line, err)
		}
		if l.Body == "while you were away" {
			got = l
		}
	}
	if got.EventID != sent.EventID || got.RoomID != room || got.Sender != bob.UserID || got.Type != "m.room.message" ||
		got.MsgType != "m.text" || got.Body != "while you were away" || time.Since(time.UnixMilli(got.TS)) > time.Hour {
		t.Errorf("tail --json printed %+v", got)
	}
}

// TestTailHistory reads an encrypted room's history with --once: decrypted, with the fields a
// script needs, bounded by --limit and --since.
func TestTailHistory(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := loginAs(t, srv, "alice")
	bob := srv.NewClient(t, "bob", matrixtest.Encrypted())
	room := id.RoomID(mustSamtal(t, "room", "create", "--invite", string(bob.UserID())))
	if _, err := bob.Join(t.Context(), string(room)); err != nil {
		t.Fatal(err)
	}
	first := id.EventID(mustSamtal(t, "send", string(room), "--markdown", "**first**"))
	send := func(msg matrix.Message) id.EventID {
		t.Helper()
		p, err := bob.Send(t.Context(), room, msg, matrix.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		evt, err := p.Wait(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return evt
	}
	firstEvt := &event.Event{ID: first, RoomID: room, Sender: alice, Type: event.EventMessage,
		Content: event.Content{Parsed: &event.MessageEventContent{MsgType: event.MsgText, Body: "**first**"}}}
	reply := send(matrix.Reply(firstEvt, matrix.Text("a reply")))
	inThread := send(matrix.InThread(first, reply, matrix.Text("in the thread")))

	lines := func(args ...string) []tailLine {
		t.Helper()
		out := mustSamtal(t, append([]string{"tail", "--once", "--json"}, args...)...)
		var got []tailLine
		for line := range strings.Lines(out) {
			var l tailLine
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("tail printed %q: %v", line, err)
			}
			got = append(got, l)
		}
		return got
	}
	all := lines(string(room))
	if len(all) != 3 {
		t.Fatalf("tail --once printed %d messages, want 3: %+v", len(all), all)
	}
	if l := all[0]; l.EventID != first || l.Body != "**first**" || !strings.Contains(l.FormattedBody, "<strong>first</strong>") || !l.Encrypted || l.Trust == "" {
		t.Errorf("first line %+v", l)
	}
	if l := all[1]; l.EventID != reply || l.Body != "a reply" || l.ReplyTo != first || l.Sender != bob.UserID() || !l.Encrypted {
		t.Errorf("reply line %+v", l)
	}
	if l := all[2]; l.EventID != inThread || l.Thread != first || l.Type != "m.room.message" {
		t.Errorf("thread line %+v", l)
	}
	for _, tc := range []struct {
		args []string
		want []id.EventID
	}{
		{[]string{"--limit", "1", string(room)}, []id.EventID{inThread}},
		{[]string{"--since", string(first), string(room)}, []id.EventID{reply, inThread}},
		{[]string{string(room), "--since", "1h"}, []id.EventID{first, reply, inThread}},
	} {
		var got []id.EventID
		for _, l := range lines(tc.args...) {
			got = append(got, l.EventID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("tail --once %q printed %v, want %v", tc.args, got, tc.want)
		}
	}
	// A new device of alice's (another database) has no keys for what came before it.
	t.Setenv("SAMTAL_DB", filepath.Join(t.TempDir(), "new-device.db"))
	if got := lines("--limit", "1", string(room)); len(got) != 1 || got[0].EventID != inThread || got[0].Type != "m.room.encrypted" ||
		!got[0].Encrypted || !strings.Contains(got[0].Body, "could not decrypt") {
		t.Errorf("a new device's tail printed %+v", got)
	}
}

// TestTailStopsQuietly: stopping tail (Ctrl-C) while its sync request waits logs no warning,
// and no sync URL with its filter, at the default level.
func TestTailStopsQuietly(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	e, _, errOut := testEnv()
	e.level = new(slog.LevelVar)
	e.log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: e.level}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"tail"}) }()
	waitFor(t, func() bool { return strings.Contains(errOut.String(), "receiving messages") }, done, errOut)
	time.Sleep(200 * time.Millisecond) // into the long poll; not a timing assertion
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("tail exited %d: %s", code, errOut)
	}
	if got := errOut.String(); strings.Contains(got, "level=WARN") || strings.Contains(got, "level=ERROR") || strings.Contains(got, "filter") {
		t.Errorf("stopping tail logged:\n%s", got)
	}
}
