package e2ee_test

import (
	"testing"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestEncryptedOnPostgres: the crypto store in a shared PostgreSQL database, across a restart.
func TestEncryptedOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts PostgreSQL (about 10 s)")
	}
	srv := matrixtest.NewServer(t)
	alice := newParty(t, srv, "alice")
	_, pw := srv.RegisterUser(t, "bot")
	bot := &party{t: t, srv: srv, dbPath: pgtest.New(t), user: "bot", password: pw, got: &inbox{}}
	bot.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(bot.close)
	room := encryptedRoom(t, alice, bot)
	send(t, alice, room, matrix.Text("stored in PostgreSQL"))
	bot.got.wait(t, "stored in PostgreSQL")

	bot.close()
	bot.got = &inbox{}
	bot.start(e2ee.Options{PickleKey: testKey})
	send(t, alice, room, matrix.Text("after the restart"))
	bot.got.wait(t, "after the restart")
	send(t, bot, room, matrix.Text("and back, encrypted"))
	alice.got.wait(t, "and back, encrypted")
}
