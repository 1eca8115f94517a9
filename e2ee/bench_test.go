package e2ee_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The encryption benchmarks compare samtal with raw mautrix (cryptohelper on a mautrix client)
// doing the same, in one run, on the same Dendrite:
//
//	for i in 1 2 3; do for impl in mautrix samtal; do
//	  go test -tags goolm -run '^$' -bench "BenchmarkFirstEncrypted/impl=$impl" -benchtime 20x -count 2 ./e2ee/
//	done; done | tee first.txt          # each implementation in its own process, alternating
//	go test -tags goolm -run '^$' -bench 'BenchmarkMegolm' -count 6 ./e2ee/ | tee goolm.txt
//	benchstat -col /impl first.txt; benchstat -col /impl goolm.txt
//
// and goolm against libolm (apt-get install libolm-dev), the same benchmarks without the tag:
//
//	CGO_ENABLED=1 go test -run '^$' -bench 'BenchmarkMegolm' -count 6 ./e2ee/ | tee libolm.txt
//	benchstat goolm.txt libolm.txt

const roomMembers = 20

// encryptedRoomWith creates an encrypted room with n other users whose devices have keys, and
// a receiver whose Syncer records what arrives. It returns the room, the receiver and the
// sender's password (the sender is "sender", invited and joined).
func encryptedRoomWith(b *testing.B, srv *matrixtest.Server, n int) (id.RoomID, *party, string) {
	b.Helper()
	receiver := newParty(b, srv, "receiver")
	var invite []id.UserID
	var members []*matrix.Client
	for i := range n - 1 {
		name := fmt.Sprintf("member%02d", i)
		_, pw := srv.RegisterUser(b, name)
		db, err := matrix.OpenDatabase(b.Context(), filepath.Join(b.TempDir(), name+".db"))
		if err != nil {
			b.Fatal(err)
		}
		c, err := matrix.New(b.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password(name, pw), DB: db, Logger: logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e2ee.Enable(b.Context(), c, e2ee.Options{PickleKey: testKey}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); db.Close() })
		invite = append(invite, c.UserID())
		members = append(members, c)
	}
	_, senderPW := srv.RegisterUser(b, "sender")
	invite = append(invite, srv.UserID("sender"))
	room, err := receiver.c.CreateRoom(b.Context(), matrix.RoomSpec{Name: "twenty", Invite: invite})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range members {
		if _, err := c.Join(b.Context(), string(room)); err != nil {
			b.Fatal(err)
		}
	}
	joiner, _ := mautrix.NewClient(srv.URL, "", "")
	if _, err := joiner.Login(b.Context(), passwordLogin("sender", senderPW, "")); err != nil {
		b.Fatal(err)
	}
	if _, err := joiner.JoinRoomByID(b.Context(), room); err != nil {
		b.Fatal(err)
	}
	return room, receiver, senderPW
}

func passwordLogin(user, pw string, device id.DeviceID) *mautrix.ReqLogin {
	return &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password: pw, DeviceID: device, StoreCredentials: true}
}

// BenchmarkFirstEncryptedMessage: from Send to the receiver's handler, for the first message of
// a new device into a room with 20 other users: Olm sessions with every device, then the room
// key to each, then the message. Each op is a new sender device. It also reports the part
// until the homeserver has accepted the event (ms-accepted/op): the receiving side is the
// same code for both, and its sync timing is most of the noise.
func BenchmarkFirstEncryptedMessage(b *testing.B) {
	srv := matrixtest.NewServer(b)
	room, receiver, pw := encryptedRoomWith(b, srv, roomMembers)

	// One op per implementation, in the same process and on the same server state: a process's
	// first op pays for warming up (connections, caches) and is not counted.
	b.Run("impl=samtal", func(b *testing.B) {
		var accepted time.Duration
		op := func(i int, count bool) {
			b.StopTimer()
			db, err := matrix.OpenDatabase(b.Context(), filepath.Join(b.TempDir(), "sender.db"))
			if err != nil {
				b.Fatal(err)
			}
			c, err := matrix.New(b.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("sender", pw), DB: db, Logger: logger(b)})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e2ee.Enable(b.Context(), c, e2ee.Options{PickleKey: testKey}); err != nil {
				b.Fatal(err)
			}
			body := fmt.Sprintf("samtal first %d %v", i, count)
			if count {
				b.StartTimer()
			}
			start := time.Now()
			p, err := c.Send(b.Context(), room, matrix.Text(body), matrix.SendOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Wait(b.Context()); err != nil {
				b.Fatal(err)
			}
			if count {
				accepted += time.Since(start)
			}
			receiver.got.wait(b, body)
			b.StopTimer()
			// Each op leaves no device behind: every later op would share keys with it too.
			if err := c.Logout(b.Context()); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		op(-1, false)
		b.ResetTimer()
		for i := range b.N {
			op(i, true)
		}
		b.ReportMetric(float64(accepted.Milliseconds())/float64(b.N), "ms-accepted/op")
	})
	b.Run("impl=mautrix", func(b *testing.B) {
		var accepted time.Duration
		op := func(i int, count bool) {
			b.StopTimer()
			cli, _, db := rawCryptoClient(b, srv, "sender", pw)
			body := fmt.Sprintf("mautrix first %d %v", i, count)
			if count {
				b.StartTimer()
			}
			// What a raw mautrix integrator must do before a first send: learn the room's state
			// (encryption, members), then send; mautrix encrypts.
			start := time.Now()
			if _, err := cli.State(b.Context(), room); err != nil {
				b.Fatal(err)
			}
			if _, err := cli.SendMessageEvent(b.Context(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body}); err != nil {
				b.Fatal(err)
			}
			if count {
				accepted += time.Since(start)
			}
			receiver.got.wait(b, body)
			b.StopTimer()
			if _, err := cli.Logout(b.Context()); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		op(-1, false)
		b.ResetTimer()
		for i := range b.N {
			op(i, true)
		}
		b.ReportMetric(float64(accepted.Milliseconds())/float64(b.N), "ms-accepted/op")
	})
}

// rawCryptoClient logs in a new device with plain mautrix and its cryptohelper, on a SQLite
// database opened the way samtal opens one (mautrix's own path opener needs cgo).
func rawCryptoClient(b *testing.B, srv *matrixtest.Server, user, pw string) (*mautrix.Client, *cryptohelper.CryptoHelper, *dbutil.Database) {
	b.Helper()
	cli, err := mautrix.NewClient(srv.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cli.Login(b.Context(), passwordLogin(user, pw, "")); err != nil {
		b.Fatal(err)
	}
	db, err := matrix.OpenDatabase(b.Context(), filepath.Join(b.TempDir(), "raw.db"))
	if err != nil {
		b.Fatal(err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, testKey, db)
	if err != nil {
		b.Fatal(err)
	}
	if err := helper.Init(b.Context()); err != nil {
		b.Fatal(err)
	}
	cli.Crypto = helper
	return cli, helper, db
}

// BenchmarkMegolm measures encrypting and decrypting with an established room session, in
// process: samtal's Machine against mautrix's cryptohelper underneath it.
func BenchmarkMegolm(b *testing.B) {
	srv := matrixtest.NewServer(b)
	alice := newParty(b, srv, "alice")
	bob := newParty(b, srv, "bob")
	room := encryptedRoom(b, alice, bob)
	send(b, alice, room, matrix.Text("warm up: creates and shares the room session"))
	helper := alice.c.Mautrix().Crypto.(*cryptohelper.CryptoHelper)
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: "Case 4711: status changed to Awaiting decision"}
	ctx := context.Background()

	encrypt := map[string]func() (*event.EncryptedEventContent, error){
		"samtal": func() (*event.EncryptedEventContent, error) {
			return alice.m.Encrypt(ctx, room, event.EventMessage, content)
		},
		"mautrix": func() (*event.EncryptedEventContent, error) {
			return helper.Encrypt(ctx, room, event.EventMessage, content)
		},
	}
	for _, impl := range []string{"samtal", "mautrix"} {
		b.Run("op=encrypt/impl="+impl, func(b *testing.B) {
			for range b.N {
				if _, err := encrypt[impl](); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	decrypt := map[string]func(*event.Event) (*event.Event, error){
		"samtal":  func(e *event.Event) (*event.Event, error) { return alice.m.Decrypt(ctx, e) },
		"mautrix": func(e *event.Event) (*event.Event, error) { return helper.Decrypt(ctx, e) },
	}
	for _, impl := range []string{"samtal", "mautrix"} {
		b.Run("op=decrypt/impl="+impl, func(b *testing.B) {
			evts := make([]*event.Event, b.N)
			for i := range evts {
				enc, err := helper.Encrypt(ctx, room, event.EventMessage, content)
				if err != nil {
					b.Fatal(err)
				}
				evts[i] = &event.Event{ID: id.EventID(fmt.Sprintf("$bench-%s-%d", impl, i)), RoomID: room, Sender: alice.c.UserID(),
					Type: event.EventEncrypted, Timestamp: time.Now().UnixMilli(), Content: event.Content{Parsed: enc}}
			}
			b.ResetTimer()
			for _, e := range evts {
				if _, err := decrypt[impl](e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchRun int

// BenchmarkSendOnlyMemberCheck measures what the member check before encrypted sends costs a
// client that does not sync: the outbox's rate into one encrypted room with five members, with
// the checks (members read at most every second, devices every 10 s) and without, in one run:
//
//	go test -tags goolm -run '^$' -bench BenchmarkSendOnlyMemberCheck -benchtime 300x -count 6 ./e2ee/ | tee check.txt
//	benchstat -col /check check.txt
func BenchmarkSendOnlyMemberCheck(b *testing.B) {
	srv := matrixtest.NewServer(b)
	for _, check := range []bool{true, false} {
		b.Run(fmt.Sprintf("check=%v", check), func(b *testing.B) {
			benchRun++ // the function runs more than once (b.N = 1 first): fresh users each time
			tag := fmt.Sprintf("%v-%d", check, benchRun)
			bot := newSendOnlyParty(b, srv, "bot-"+tag)
			if !check {
				e2ee.DisableMemberChecks(bot.m)
			}
			var invite []id.UserID
			for i := range 4 {
				invite = append(invite, newSendOnlyParty(b, srv, fmt.Sprintf("m%d-%s", i, tag)).c.UserID())
			}
			room, err := bot.c.CreateRoom(b.Context(), matrix.RoomSpec{Preset: matrix.CaseRoom, CaseID: tag, Invite: invite})
			if err != nil {
				b.Fatal(err)
			}
			send(b, bot, room, matrix.Text("warm up")) // first send: room state, devices, the key
			b.ResetTimer()
			pending := make([]*matrix.Pending, 0, b.N)
			for i := range b.N {
				p, err := bot.c.Send(b.Context(), room, matrix.Text(fmt.Sprintf("notification %d", i)), matrix.SendOptions{})
				if err != nil {
					b.Fatal(err)
				}
				pending = append(pending, p)
			}
			for _, p := range pending {
				if _, err := p.Wait(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
