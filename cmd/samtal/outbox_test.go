package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestOutboxCommand lists the outbox, retries a failed item and drops a sent one.
func TestOutboxCommand(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, bob)
	mustSamtal(t, "send", "--key", "case-4711/1", string(room), "hello")
	// The CLI refuses rooms the account is not in before it sends; the library stores first.
	db, err := matrix.OpenDatabase(t.Context(), os.Getenv("SAMTAL_DB"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := matrix.New(t.Context(), matrix.Options{DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Send(t.Context(), "!nowhere:localhost", matrix.Text("into a room alice is not in"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(t.Context()); !errors.Is(err, matrix.ErrForbidden) {
		t.Fatalf("send into a room alice is not in: %v", err)
	}
	c.Close()
	db.Close()

	list := func(args ...string) []outboxJSON {
		t.Helper()
		var items []outboxJSON
		for _, line := range strings.Split(mustSamtal(t, append([]string{"outbox", "list", "--json"}, args...)...), "\n") {
			if line == "" {
				continue
			}
			var it outboxJSON
			if err := json.Unmarshal([]byte(line), &it); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			items = append(items, it)
		}
		return items
	}
	items := list()
	if len(items) != 2 || items[0].State != "sent" || items[0].EventID == "" || items[0].Key != "case-4711/1" ||
		items[1].State != "failed" || items[1].Status != 403 || items[1].ErrCode != "M_FORBIDDEN" || items[1].Attempts != 1 {
		t.Fatalf("outbox list: %+v", items)
	}
	if strings.Contains(mustSamtal(t, "outbox", "list"), "into a room alice is not in") {
		t.Error("the list shows message content")
	}
	sent, failed := strconv.FormatInt(items[0].ID, 10), strconv.FormatInt(items[1].ID, 10)

	if got := mustSamtal(t, "outbox", "retry", failed); got != "retried "+failed {
		t.Errorf("retry: %q", got)
	}
	if p := list("--state", "pending"); len(p) != 1 || p[0].ID != items[1].ID || p[0].Attempts != 0 || p[0].Error != "" {
		t.Errorf("after retry: %+v", p)
	}
	if r := samtal(t, nil, "outbox", "drop", failed); r.code == exitOK {
		t.Error("a pending item was dropped")
	}
	mustSamtal(t, "outbox", "drop", sent)
	if rest := list(); len(rest) != 1 || rest[0].ID != items[1].ID {
		t.Errorf("after drop: %+v", rest)
	}

	for _, args := range [][]string{{"outbox"}, {"outbox", "frobnicate"}, {"outbox", "retry"}, {"outbox", "drop", "abc"}, {"outbox", "list", "x"}} {
		if r := samtal(t, nil, args...); r.code != exitUsage {
			t.Errorf("samtal %q: exit %d, want %d", args, r.code, exitUsage)
		}
	}
}
