package mailbridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
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
// transaction. With no targets (a mail no route takes) only the checkpoint moves. It returns
// the spool ID, or 0 when nothing was spooled.
func (s *spool) storeIMAP(ctx context.Context, mailFrom string, message []byte, targets []target, cp imapCheckpoint) (int64, error) {
	var spoolID int64
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if len(targets) > 0 {
			err := s.db.QueryRow(ctx, `INSERT INTO samtal_mail_spool (received_at, mail_from, message) VALUES ($1, $2, $3) RETURNING id`,
				time.Now().UnixMilli(), mailFrom, message).Scan(&spoolID)
			if err != nil {
				return err
			}
			for _, t := range targets {
				_, err := s.db.Exec(ctx, `INSERT INTO samtal_mail_delivery (spool_id, target, recipient, create_spec) VALUES ($1, $2, $3, $4)`,
					spoolID, t.room, t.recipient, t.createSpec)
				if err != nil {
					return err
				}
			}
		}
		return s.saveCheckpoint(ctx, cp)
	})
	if err != nil {
		return 0, fmt.Errorf("mailbridge: spool IMAP mail %d of %s: %w", cp.lastUID, cp.mailbox, err)
	}
	return spoolID, nil
}

// saveCheckpoint writes cp, inside the caller's transaction when ctx carries one.
func (s *spool) saveCheckpoint(ctx context.Context, cp imapCheckpoint) error {
	_, err := s.db.Exec(ctx, `INSERT INTO samtal_mail_imap_checkpoint (account, mailbox, uid_validity, last_uid, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (account, mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, updated_at = excluded.updated_at`,
		cp.account, cp.mailbox, int64(cp.uidValidity), int64(cp.lastUID), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("mailbridge: write IMAP checkpoint of %s: %w", cp.mailbox, err)
	}
	return nil
}
