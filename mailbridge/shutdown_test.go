package mailbridge_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestShutdownFinishesTransactions: Shutdown stops listening at once, lets a mail whose DATA is
// under way finish and answers it 250 (and posts it), closes an idle connection, and returns
// once the last transaction ended.
func TestShutdownFinishesTransactions(t *testing.T) {
	stage := newStage(t)
	bot, officer, room := stage.bot, stage.officer, stage.room
	inbox := matrixtest.NewRecorder(t, officer, room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	g, addr := startGateway(t, mailbridge.Options{Client: bot, Router: router})

	busy := dial(t, addr)
	idle := dial(t, addr)
	if err := busy.Mail("a@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := busy.Rcpt("cases@agency.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := busy.Data()
	if err != nil {
		t.Fatal(err)
	}
	raw := mail("a@agency.example", "In flight", "inflight@agency.example", "finished after shutdown began")
	if _, err := io.WriteString(w, raw[:len(raw)/2]); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- g.Shutdown(context.Background()) }()
	matrixtest.Eventually(t, func() error { // the listener is closed: no new connections
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return errors.New("still accepting connections")
		}
		return nil
	})
	matrixtest.Eventually(t, func() error { // the idle connection is closed
		if idle.Noop() == nil {
			return errors.New("idle connection still open")
		}
		return nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v while a transaction was under way", err)
	default:
	}
	if _, err := io.WriteString(w, raw[len(raw)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA during shutdown: %v, want 250", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := busy.Noop(); err == nil {
		t.Error("the connection stayed open after its transaction, during shutdown")
	}
	// Posted by the first gateway, or, if its delivery stopped first, by the next one.
	startGateway(t, mailbridge.Options{Client: bot, Router: router})
	inbox.Wait(t, subjectLine("In flight"))
}
