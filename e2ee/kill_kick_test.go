package e2ee_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestKilledAfterKick re-executes this test binary as the bot that kicks; init runs it before
// the testing framework starts.
const envKickChild = "SAMTAL_E2EE_KICK_CHILD"

func init() {
	if os.Getenv(envKickChild) != "1" {
		return
	}
	if err := kickChild(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "kick child:", err)
		os.Exit(1)
	}
	select {} // killed by the test
}

// kickChild opens the bot's stored session in CHILD_DB, kicks CHILD_KICK from CHILD_ROOM and
// says "kicked" on stdout.
func kickChild(ctx context.Context) error {
	db, err := matrix.OpenDatabase(ctx, os.Getenv("CHILD_DB"))
	if err != nil {
		return err
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: os.Getenv("CHILD_URL"), DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	if _, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: testKey}); err != nil {
		return err
	}
	if err := c.Kick(ctx, id.RoomID(os.Getenv("CHILD_ROOM")), id.UserID(os.Getenv("CHILD_KICK")), "left the agency"); err != nil {
		return err
	}
	fmt.Println("kicked")
	return nil
}

// TestKilledAfterKick: the bot is killed (SIGKILL) right after Kick returned; restarted on the
// same database, its next message uses a new room key that the kicked member never gets.
func TestKilledAfterKick(t *testing.T) {
	srv := matrixtest.NewServer(t)
	cr := newCaseRoom(t, srv, srv, "killed", false)
	cr.bot.close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envKickChild+"=1", "CHILD_DB="+cr.bot.dbPath, "CHILD_URL="+srv.URL,
		"CHILD_ROOM="+string(cr.room), "CHILD_KICK="+string(cr.b.c.UserID()))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "kicked\n" {
		t.Fatalf("the kicking bot said %q (%v)", line, err)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()

	cr.bot.start(e2ee.Options{PickleKey: testKey})
	m2 := send(t, cr.bot, cr.room, matrix.Text("killed: m2"))
	cr.a.got.wait(t, "killed: m2")
	if s2 := sessionOf(t, cr.bot, cr.room, m2); s2 == cr.session1 {
		t.Errorf("m2 reuses m1's room key %s", s2)
	}
	cannotRead(t, cr.b, cr.bot, cr.room, m2)
}
