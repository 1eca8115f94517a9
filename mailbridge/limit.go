package mailbridge

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tooManyConnections is the greeting a connection over Options.MaxConnections gets before it is
// closed: temporary, so the sender tries again later (RFC 5321 4.3.2, 421 at connection open).
const tooManyConnections = "421 4.7.0 Too many connections, try again later\r\n"

// limitListener hands at most max connections at a time to the SMTP server; the ones above
// that are answered 421 and closed at once, so that a flood cannot hold the gateway's memory.
type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte(tooManyConnections))
			_ = c.Close()
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// countedConn gives its place back when it is closed, once.
type countedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
