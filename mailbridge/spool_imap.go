package mailbridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// This file holds what the IMAP poller needs from the spool: a mail stored together with the
// poller's checkpoint, in one transaction, so that a crash leaves either both or neither.

// imapCheckpoint is how far the poller of one mailbox has got: every UID up to lastUID under
// uidValidity is spooled (or skipped on purpose).
type imapCheckpoint struct {
	account     string
	mailbox     string
	uidValidity uint32
	lastUID     uint32
}

// checkpoint returns the stored checkpoint of a mailbox, and false when there is none yet.
func (s *spool) checkpoint(ctx context.Context, account, mailbox string) (imapCheckpoint, bool, error) {
	cp := imapCheckpoint{account: account, mailbox: mailbox}
	var validity, last int64
	err := s.db.QueryRow(ctx, `SELECT uid_validity, last_uid FROM samtal_mail_imap_checkpoint WHERE account = $1 AND mailbox = $2`,
		account, mailbox).Scan(&validity, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("mailbridge: read IMAP checkpoint of %s: %w", mailbox, err)
	}
	cp.uidValidity, cp.lastUID = uint32(validity), uint32(last)
	return cp, true, nil
}

// storeIMAP spools a mail fetched over IMAP and moves the mailbox's checkpoint to it, in one
// transaction: the group commit's (commit.go), shared with the mail arriving over SMTP. With no
// targets (a mail no route takes) only the checkpoint moves. With after set, the mail is also
// recorded as one to flag or move once it is delivered (imap_after.go). It returns the spool
// ID, or 0 when nothing was spooled.
func (s *spool) storeIMAP(ctx context.Context, mailFrom string, message []byte, targets []target, cp imapCheckpoint, after bool) (int64, error) {
	id, err := s.commit.submitReq(ctx, &commitReq{mailFrom: mailFrom, message: message, targets: targets, imap: &imapCommit{cp: cp, after: after}})
	if err != nil {
		return 0, fmt.Errorf("mailbridge: spool IMAP mail %d of %s: %w", cp.lastUID, cp.mailbox, err)
	}
	return id, nil
}

// imapCommit is what a mail from IMAP commits with it: the checkpoint at its UID, and whether
// it is to be flagged or moved once delivered.
type imapCommit struct {
	cp    imapCheckpoint
	after bool
}

// commit writes c inside the committer's transaction; spoolID is the mail's, 0 when it was
// not spooled.
func (c *imapCommit) commit(ctx context.Context, db *dbutil.Database, spoolID int64) error {
	if err := saveCheckpoint(ctx, db, c.cp); err != nil {
		return err
	}
	if !c.after || spoolID == 0 {
		return nil
	}
	_, err := db.Exec(ctx, `INSERT INTO samtal_mail_imap_after (account, mailbox, uid_validity, uid, spool_id) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (account, mailbox, uid_validity, uid) DO UPDATE SET spool_id = excluded.spool_id`,
		c.cp.account, c.cp.mailbox, int64(c.cp.uidValidity), int64(c.cp.lastUID), spoolID)
	if err != nil {
		return fmt.Errorf("mailbridge: record IMAP mail %d of %s to flag or move: %w", c.cp.lastUID, c.cp.mailbox, err)
	}
	return nil
}

// saveCheckpoint writes cp.
func (s *spool) saveCheckpoint(ctx context.Context, cp imapCheckpoint) error {
	return saveCheckpoint(ctx, s.db, cp)
}

// saveCheckpoint writes cp into db, inside the caller's transaction when ctx carries one.
func saveCheckpoint(ctx context.Context, db *dbutil.Database, cp imapCheckpoint) error {
	_, err := db.Exec(ctx, `INSERT INTO samtal_mail_imap_checkpoint (account, mailbox, uid_validity, last_uid, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (account, mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, updated_at = excluded.updated_at`,
		cp.account, cp.mailbox, int64(cp.uidValidity), int64(cp.lastUID), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("mailbridge: write IMAP checkpoint of %s: %w", cp.mailbox, err)
	}
	return nil
}
