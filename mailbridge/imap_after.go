package mailbridge

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// After posting: a mailbox with a Flag or a MoveTo has each of its mails flagged or moved once
// the mail is delivered into every room it goes to (the outbox has sent it, confirm.go), not
// once it is spooled: a person looking at the mailbox sees as done only what is in the rooms.
//
// The mails to do are recorded with the mail and the checkpoint, in the same transaction
// (samtal_mail_imap_after), so a crash loses none; the poller does those that are delivered
// each time it has taken new mail and whenever a delivery is confirmed, and a poller that was
// stopped does what was delivered meanwhile when it runs again. A mail flagged or moved twice
// (a crash between doing it and recording it) is harmless: the flag is there already, and
// the moved UID is no longer in the mailbox.

// afterBatch bounds the UIDs flagged or moved in one command.
const afterBatch = 500

// afterPost reports whether the mailbox flags or moves its mails once posted.
func (mb *IMAPMailbox) afterPost() bool { return mb.Flag != "" || mb.MoveTo != "" }

// afterPosted flags or moves the mails of mb that are delivered now, and forgets those of an
// earlier UIDVALIDITY (their UIDs mean nothing in the mailbox as it is).
func (p *Poller) afterPosted(ctx context.Context, log *slog.Logger, c *imapclient.Client, mb *IMAPMailbox, cp imapCheckpoint) error {
	if !mb.afterPost() {
		return nil
	}
	db := p.g.spool.db
	if _, err := db.Exec(ctx, `DELETE FROM samtal_mail_imap_after WHERE account = $1 AND mailbox = $2 AND uid_validity <> $3`,
		p.account, mb.Name, int64(cp.uidValidity)); err != nil {
		return fmt.Errorf("mailbridge: forget IMAP mail of an old UIDVALIDITY: %w", err)
	}
	for ctx.Err() == nil {
		uids, err := p.delivered(ctx, mb, cp.uidValidity)
		if err != nil || len(uids) == 0 {
			return err
		}
		var set imap.UIDSet
		for _, uid := range uids {
			set.AddNum(uid)
		}
		if err := flagOrMove(c, mb, set); err != nil {
			return err
		}
		err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
			for _, uid := range uids {
				if _, err := db.Exec(ctx, `DELETE FROM samtal_mail_imap_after WHERE account = $1 AND mailbox = $2 AND uid_validity = $3 AND uid = $4`,
					p.account, mb.Name, int64(cp.uidValidity), int64(uid)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mailbridge: record IMAP mail flagged or moved: %w", err)
		}
		log.Debug("posted IMAP mail flagged or moved", "count", len(uids), "flag", mb.Flag, "move_to", mb.MoveTo)
		if len(uids) < afterBatch {
			return nil
		}
	}
	return ctx.Err()
}

// delivered returns UIDs of mails of mb whose every delivery is done, lowest first.
func (p *Poller) delivered(ctx context.Context, mb *IMAPMailbox, uidValidity uint32) ([]imap.UID, error) {
	rows, err := p.g.spool.db.Query(ctx, `SELECT a.uid FROM samtal_mail_imap_after a
		WHERE a.account = $1 AND a.mailbox = $2 AND a.uid_validity = $3
		AND NOT EXISTS (SELECT 1 FROM samtal_mail_delivery d WHERE d.spool_id = a.spool_id AND d.state <> 1)
		ORDER BY a.uid LIMIT $4`, p.account, mb.Name, int64(uidValidity), afterBatch)
	if err != nil {
		return nil, fmt.Errorf("mailbridge: read IMAP mail to flag or move: %w", err)
	}
	defer rows.Close()
	var out []imap.UID
	for rows.Next() {
		var uid int64
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("mailbridge: read IMAP mail to flag or move: %w", err)
		}
		out = append(out, imap.UID(uid))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbridge: read IMAP mail to flag or move: %w", err)
	}
	return out, nil
}

// flagOrMove flags or moves the mails uids, as the mailbox asks.
func flagOrMove(c *imapclient.Client, mb *IMAPMailbox, uids imap.UIDSet) error {
	if mb.Flag != "" {
		store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.Flag(mb.Flag)}}
		if err := c.Store(uids, store, nil).Close(); err != nil {
			return fmt.Errorf("flag posted mail %s: %w", mb.Flag, err)
		}
	}
	if mb.MoveTo != "" {
		caps := c.Caps()
		if !caps.Has(imap.CapMove) && !caps.Has(imap.CapUIDPlus) && !caps.Has(imap.CapIMAP4rev2) {
			// The fallback would be COPY and a plain EXPUNGE, which also removes mail that a
			// person marked \Deleted: not ours to do.
			return fmt.Errorf("move posted mail to %s: the server has neither MOVE nor UIDPLUS, so it cannot move without expunging other mail", mb.MoveTo)
		}
		if _, err := c.Move(uids, mb.MoveTo).Wait(); err != nil {
			return fmt.Errorf("move posted mail to %s: %w", mb.MoveTo, err)
		}
	}
	return nil
}

// deliveries returns a channel that is closed when the next delivery is confirmed.
func (g *Gateway) deliveries() <-chan struct{} {
	g.deliveredMu.Lock()
	defer g.deliveredMu.Unlock()
	if g.deliveredCh == nil {
		g.deliveredCh = make(chan struct{})
	}
	return g.deliveredCh
}

// announceDelivered wakes whoever waits on deliveries.
func (g *Gateway) announceDelivered() {
	g.deliveredMu.Lock()
	defer g.deliveredMu.Unlock()
	if g.deliveredCh != nil {
		close(g.deliveredCh)
		g.deliveredCh = nil
	}
}
