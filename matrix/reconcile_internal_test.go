package matrix

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestReconcileLooksPastOthersEvents: an item was sent but not recorded (the process died in
// between), then 150 other events arrived; the restarted outbox finds it behind them and does
// not send it again.
func TestReconcileLooksPastOthersEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: puts 150 events on the server first (about 15 s)")
	}
	srv := newTestServer(t)
	alice := newTestAccount(t, srv, "alice")
	bob := srv.Client(t, "bob")
	open := func() *Client { return alice.open(OutboxOptions{ResumeDelay: 50 * time.Millisecond}) }
	c := open()
	resp, err := c.mx.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	if _, err := bob.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The row as Send stores it, and the event as the dead process had sent it.
	content, _ := json.Marshal(Text("sent before the crash").Content)
	var rowID int64
	err = c.db.QueryRow(t.Context(), `INSERT INTO samtal_outbox (session, room_id, event_type, content, idempotency_key, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, c.name, room, event.EventMessage.Type, string(content), "the-key", time.Now().UnixMilli()).Scan(&rowID)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := c.send.SendMessageEvent(t.Context(), room, event.EventMessage, withTxnKey(content, c.outbox.txnID(rowID)),
		mautrix.ReqSendEvent{TransactionID: "from-the-dead-process"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 150 {
		if _, err := bob.SendText(t.Context(), room, fmt.Sprintf("bob %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	again := open()
	defer again.Close()
	p, err := again.Send(t.Context(), room, Text("sent before the crash"), SendOptions{IdempotencyKey: "the-key"})
	if err != nil || !p.Duplicate {
		t.Fatalf("repeat: %+v, %v", p, err)
	}
	got, err := p.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != sent.EventID {
		t.Fatalf("the outbox did not find %s and sent %s", sent.EventID, got)
	}
}
