package mailbridge

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrShuttingDown is the reply to MAIL while the gateway shuts down (421 4.3.2): the sender
// tries again later, or at another instance.
var ErrShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down, try again later"}

// conns tracks the SMTP connections, so that Shutdown can let transactions under way finish
// and close each connection as soon as it is between transactions.
type conns struct {
	mu       sync.Mutex
	open     map[*session]*connState
	draining bool
}

type connState struct {
	nc   net.Conn
	busy bool // between MAIL and the end of DATA (or RSET)
}

// add tracks a new connection.
func (cs *conns) add(s *session, nc net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.open == nil {
		cs.open = map[*session]*connState{}
	}
	cs.open[s] = &connState{nc: nc}
}

// remove forgets a closed connection.
func (cs *conns) remove(s *session) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.open, s)
}

// refusing reports whether new transactions are refused: the gateway is shutting down.
func (cs *conns) refusing() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.draining
}

// begin marks a transaction started by MAIL.
func (cs *conns) begin(s *session) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if st := cs.open[s]; st != nil {
		st.busy = true
	}
}

// end marks a transaction over (go-smtp resets the session after it answered DATA, and on
// RSET); while shutting down, the connection is closed now.
func (cs *conns) end(s *session) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	st := cs.open[s]
	if st == nil {
		return
	}
	st.busy = false
	if cs.draining && st.nc != nil {
		_ = st.nc.Close()
	}
}

// drain refuses new transactions and closes the idle connections; it reports how many are
// still in a transaction.
func (cs *conns) drain() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.draining = true
	busy := 0
	for _, st := range cs.open {
		if st.busy {
			busy++
		} else if st.nc != nil {
			_ = st.nc.Close()
		}
	}
	return busy
}

// closeAll closes every connection.
func (cs *conns) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, st := range cs.open {
		if st.nc != nil {
			_ = st.nc.Close()
		}
	}
}

// Shutdown stops the gateway gracefully: it stops listening, refuses new transactions (421
// 4.3.2), lets the transactions under way finish (the mail is spooled and answered), closes
// each connection as its transaction ends, and then closes the gateway as Close does. When
// ctx ends first, the connections still open are cut, as Close does, and their mail is not
// accepted (the sender tries again). It returns ctx's error in that case.
func (g *Gateway) Shutdown(ctx context.Context) error {
	stopped := make(chan error, 1)
	go func() { stopped <- g.server.Shutdown(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		g.conns.drain() // again and again: a connection accepted meanwhile, a MAIL refused
		select {
		case e := <-stopped:
			if !errors.Is(e, smtp.ErrServerClosed) && !errors.Is(e, net.ErrClosed) {
				err = e
			}
			break wait
		case <-tick.C:
		}
	}
	if err != nil {
		g.conns.closeAll() // ctx ended: cut what is still open
	}
	if cerr := g.Close(); err == nil {
		err = cerr
	}
	return err
}
