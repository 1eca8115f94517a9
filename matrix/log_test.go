package matrix_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/logtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestNoMessageInLogsThroughOutage sends a marked message while the homeserver is down, so that
// every attempt fails and is logged (by samtal and by mautrix's request logging), then brings
// the server back. The message goes out; neither the log, at debug level, nor an error holds
// the marker.
func TestNoMessageInLogsThroughOutage(t *testing.T) {
	srv := matrixtest.NewServer(t)
	logger, logs := logtest.Capture()
	bot := srv.NewClient(t, "casebot", matrixtest.WithLogger(logger),
		matrixtest.WithOutbox(matrix.OutboxOptions{MinRetryDelay: 20 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond, ResumeDelay: 50 * time.Millisecond}))
	officer := srv.Client(t, "officer")
	room, err := bot.CreateRoom(t.Context(), matrix.RoomSpec{Encrypted: new(false), Invite: []id.UserID{officer.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}

	// A first message lets the client learn that the room is unencrypted while it can ask.
	first, err := bot.Send(t.Context(), room, matrix.Text("before the outage"), matrix.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}

	const marker = "MARKER-4711 Anna Andersson, born 1970-01-01"
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	p, err := bot.Send(t.Context(), room, matrix.Text(marker), matrix.SendOptions{IdempotencyKey: "case-4711/marker"})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until attempts have failed, and been logged, a few times.
	matrixtest.Eventually(t, func() error {
		if n := strings.Count(logs.String(), "level=ERROR") + strings.Count(logs.String(), "level=WARN"); n < 3 {
			return fmt.Errorf("%d failed attempts logged so far", n)
		}
		return nil
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	sent, err := p.Wait(t.Context())
	if err != nil {
		if strings.Contains(err.Error(), "MARKER") {
			t.Errorf("the error holds the message: %v", err)
		}
		t.Fatal(err)
	}
	matrixtest.WaitMessage(t, officer, room, marker)
	if got := logs.String(); strings.Contains(got, "MARKER") || strings.Contains(got, "Andersson") {
		t.Errorf("the log holds the message's text:\n%s", got)
	}
	if !strings.Contains(logs.String(), "from=mautrix") {
		t.Errorf("mautrix logged nothing about the failed requests; the test proves nothing:\n%s", logs.String())
	}
	t.Logf("sent %s after %d log lines", sent, strings.Count(logs.String(), "\n"))
}
