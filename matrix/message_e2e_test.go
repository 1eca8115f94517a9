package matrix_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestBuildersThroughSync sends what every builder makes and checks what a second client
// receives through sync.
func TestBuildersThroughSync(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)
	ctx := t.Context()

	send := func(m matrix.Message) id.EventID {
		t.Helper()
		p, err := alice.Send(ctx, room, m, matrix.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		evt, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return evt
	}
	receive := func(evtID id.EventID) *event.Event {
		t.Helper()
		return matrixtest.WaitEvent(t, bob, room, func(e *event.Event) bool { return e.ID == evtID })
	}
	msgOf := func(e *event.Event) *event.MessageEventContent {
		t.Helper()
		m := e.Content.AsMessage()
		if m == nil {
			t.Fatalf("%s is not a message: %s", e.ID, e.Content.VeryRaw)
		}
		return m
	}

	t.Run("text notice emote", func(t *testing.T) {
		for _, tc := range []struct {
			m    matrix.Message
			want event.MessageType
		}{{matrix.Text("plain"), event.MsgText}, {matrix.Notice("from a bot"), event.MsgNotice}, {matrix.Emote("waves"), event.MsgEmote}} {
			got := msgOf(receive(send(tc.m)))
			if got.MsgType != tc.want || got.Body != tc.m.Content.(*event.MessageEventContent).Body {
				t.Errorf("got %s %q, want %s", got.MsgType, got.Body, tc.want)
			}
		}
	})
	t.Run("markdown with mention", func(t *testing.T) {
		got := msgOf(receive(send(matrix.Markdown("**Beslut** i ärende 4711, " + string(bob.UserID)))))
		if got.Format != event.FormatHTML || !strings.Contains(got.FormattedBody, "<strong>Beslut</strong>") {
			t.Errorf("formatted_body %q", got.FormattedBody)
		}
		if !strings.Contains(got.FormattedBody, "https://matrix.to/#/"+string(bob.UserID)) {
			t.Errorf("no pill for bob in %q", got.FormattedBody)
		}
		if got.Mentions == nil || len(got.Mentions.UserIDs) != 1 || got.Mentions.UserIDs[0] != bob.UserID {
			t.Errorf("m.mentions %+v", got.Mentions)
		}
	})
	t.Run("hostile HTML is sanitized", func(t *testing.T) {
		got := msgOf(receive(send(matrix.HTML(`<p onclick="x()">ok<script>alert(1)</script><a href="javascript:evil()">link</a></p>`))))
		for _, bad := range []string{"script", "onclick", "javascript:"} {
			if strings.Contains(got.FormattedBody, bad) {
				t.Errorf("%q survived: %q", bad, got.FormattedBody)
			}
		}
		if !strings.Contains(got.Body, "ok") {
			t.Errorf("plain body %q", got.Body)
		}
	})
	root := receive(send(matrix.Text("thread root")))
	t.Run("reply", func(t *testing.T) {
		got := msgOf(receive(send(matrix.Reply(root, matrix.Text("a reply")))))
		if got.RelatesTo == nil || got.RelatesTo.GetReplyTo() != root.ID {
			t.Errorf("relates_to %+v", got.RelatesTo)
		}
	})
	t.Run("thread", func(t *testing.T) {
		got := msgOf(receive(send(matrix.InThread(root.ID, "", matrix.Text("in the thread")))))
		if got.RelatesTo == nil || got.RelatesTo.GetThreadParent() != root.ID {
			t.Errorf("relates_to %+v", got.RelatesTo)
		}
	})
	t.Run("edit", func(t *testing.T) {
		got := msgOf(receive(send(matrix.Edit(root.ID, matrix.Text("thread root, edited")))))
		if got.RelatesTo == nil || got.RelatesTo.GetReplaceID() != root.ID || got.NewContent == nil || got.NewContent.Body != "thread root, edited" {
			t.Errorf("edit content %+v", got)
		}
	})
	t.Run("reaction", func(t *testing.T) {
		evt := receive(send(matrix.Reaction(root.ID, "👍")))
		r := evt.Content.AsReaction()
		if evt.Type != event.EventReaction || r.RelatesTo.EventID != root.ID || r.RelatesTo.Key != "👍" {
			t.Errorf("reaction %s %+v", evt.Type, r)
		}
	})
	t.Run("case notification", func(t *testing.T) {
		n := matrix.CaseNotification{CaseID: "4711", Title: "Permit application overdue", Severity: matrix.SeverityCritical,
			Fields: []matrix.Field{{Name: "Handler", Value: "Anna <Svensson>"}}, Link: "https://cases.example.se/4711"}
		m, err := n.Message()
		if err != nil {
			t.Fatal(err)
		}
		got := msgOf(receive(send(m)))
		if got.MsgType != event.MsgNotice || !strings.HasPrefix(got.Body, "[Critical] Case 4711: Permit application overdue") {
			t.Errorf("body %q", got.Body)
		}
		if !strings.Contains(got.FormattedBody, "Anna &lt;Svensson&gt;") || !strings.Contains(got.FormattedBody, `href="https://cases.example.se/4711"`) {
			t.Errorf("formatted_body %q", got.FormattedBody)
		}
	})
	t.Run("files", func(t *testing.T) {
		png := []byte("\x89PNG\r\n\x1a\n fake image bytes")
		for _, att := range []matrix.Attachment{
			{Name: "beslut.txt", Data: []byte("Beslut: bifall")},
			{Name: "karta.png", Data: png, Kind: matrix.ImageKind, Width: 640, Height: 480},
		} {
			p, err := alice.SendFile(ctx, room, att, matrix.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			evtID, err := p.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := msgOf(receive(evtID))
			if got.Body != att.Name || got.Info == nil || got.Info.Size != len(att.Data) {
				t.Errorf("file message %+v", got)
			}
			if att.Kind == matrix.ImageKind && (got.MsgType != event.MsgImage || got.Info.MimeType != "image/png" || got.Info.Width != 640) {
				t.Errorf("image message %s %+v", got.MsgType, got.Info)
			}
			data, err := alice.Download(ctx, got, 0)
			if err != nil || !bytes.Equal(data, att.Data) {
				t.Errorf("download: %v, %q", err, data)
			}
		}
	})
}

func TestMediaLimitsAndEncryptedRooms(t *testing.T) {
	srv := matrixtest.NewServer(t, matrixtest.WithMaxUpload(1024))
	alice := newClient(t, srv, "alice")
	bob := srv.Client(t, "bob")
	room := sharedRoom(t, alice, bob)
	ctx := t.Context()

	// Refused when the item is sent (Send stores first), before anything is uploaded.
	if _, err := sendAndWait(ctx, func() (*matrix.Pending, error) {
		return alice.SendFile(ctx, room, matrix.Attachment{Name: "big.bin", Data: make([]byte, 4096)}, matrix.SendOptions{})
	}); !errors.Is(err, matrix.ErrTooLarge) {
		t.Errorf("file over the server's limit: %v, want ErrTooLarge", err)
	}
	for _, name := range []string{"", "../etc/passwd", "a\x00b"} {
		if _, err := alice.SendFile(ctx, room, matrix.Attachment{Name: name, Data: []byte("x")}, matrix.SendOptions{}); !errors.Is(err, matrix.ErrInvalidContent) {
			t.Errorf("file name %q: %v, want ErrInvalidContent", name, err)
		}
	}
	// Without e2ee, nothing goes into an encrypted room: not a message, not a file.
	enc, err := alice.Mautrix().CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Found out when the item is sent; once known, Send refuses at once.
	if _, err := sendAndWait(ctx, func() (*matrix.Pending, error) {
		return alice.Send(ctx, enc.RoomID, matrix.Text("secret"), matrix.SendOptions{})
	}); !errors.Is(err, matrix.ErrEncryptionRequired) {
		t.Errorf("send into encrypted room: %v, want ErrEncryptionRequired", err)
	}
	if _, err := alice.SendFile(ctx, enc.RoomID, matrix.Attachment{Name: "a.txt", Data: []byte("x")}, matrix.SendOptions{}); !errors.Is(err, matrix.ErrEncryptionRequired) {
		t.Errorf("file into encrypted room: %v, want ErrEncryptionRequired", err)
	}
	// A room that becomes encrypted later is noticed within the recheck period, not trusted forever
	// as plaintext: here it was encrypted from the start, so the answer is cached as encrypted.
	if ok, err := alice.RoomEncrypted(ctx, enc.RoomID); err != nil || !ok {
		t.Errorf("RoomEncrypted = %v, %v", ok, err)
	}
	if ok, err := alice.RoomEncrypted(ctx, room); err != nil || ok {
		t.Errorf("RoomEncrypted(plain room) = %v, %v", ok, err)
	}
	// Downloads of something that is not there are a clear error.
	if _, err := alice.Download(ctx, &event.MessageEventContent{URL: "mxc://localhost/nothing"}, 0); !errors.Is(err, matrix.ErrNotFound) {
		t.Errorf("download of unknown media: %v, want ErrNotFound", err)
	}
	if _, err := alice.Download(ctx, &event.MessageEventContent{URL: "https://example.com/x"}, 0); !errors.Is(err, matrix.ErrInvalidContent) {
		t.Errorf("download of a non-mxc URL: %v, want ErrInvalidContent", err)
	}
}

// sendAndWait runs a send and waits for its outcome: the error of either.
func sendAndWait(ctx context.Context, send func() (*matrix.Pending, error)) (id.EventID, error) {
	p, err := send()
	if err != nil {
		return "", err
	}
	return p.Wait(ctx)
}
