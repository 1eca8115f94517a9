package mailbridge

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"

	"go.mau.fi/util/dbutil"
)

// mailboxLock makes sure that on PostgreSQL, where several gateway instances share one
// database, one poller at a time takes mail from a mailbox: it holds a session advisory lock
// on a connection of its own for as long as the poller's session lasts. The lock goes with
// the connection, so a crashed instance frees it. On SQLite, one process owns the database
// and the lock is nothing.
type mailboxLock struct {
	conn *sql.Conn // nil on SQLite
	key  int64
}

// lock takes the advisory lock of a mailbox, or returns errMailboxBusy.
func (p *Poller) lock(ctx context.Context, mailbox string) (*mailboxLock, error) {
	db := p.g.spool.db
	if db.Dialect != dbutil.Postgres {
		return &mailboxLock{}, nil
	}
	h := fnv.New64a()
	h.Write([]byte("samtal/mailbridge/imap\x00" + p.account + "\x00" + mailbox))
	l := &mailboxLock{key: int64(h.Sum64())}
	conn, err := db.RawDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: connection for the IMAP mailbox lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&ok); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mailbridge: take the IMAP mailbox lock: %w", err)
	}
	if !ok {
		conn.Close()
		return nil, errMailboxBusy
	}
	l.conn = conn
	return l, nil
}

// alive reports an error when the lock's connection is gone, and with it the lock.
func (l *mailboxLock) alive(ctx context.Context) error {
	if l.conn == nil {
		return nil
	}
	if err := l.conn.PingContext(ctx); err != nil {
		return fmt.Errorf("mailbridge: IMAP mailbox lock lost: %w", err)
	}
	return nil
}

// release gives the lock up and closes its connection.
func (l *mailboxLock) release() {
	if l.conn == nil {
		return
	}
	_, _ = l.conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, l.key)
	_ = l.conn.Close()
}
