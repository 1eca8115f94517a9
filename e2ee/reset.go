package e2ee

import (
	"context"
	"fmt"
	"strings"

	"github.com/samtalhq/samtal/matrix"
)

// Reset gives up the client's device after its keys were lost (ErrKeysGoneFromServer,
// ErrStoreLost) or cannot be opened (ErrWrongPickleKey): it deletes the device's Olm account,
// Olm sessions, outbound room keys and secrets from the crypto store, logs the device out and
// forgets the stored session. c is closed. The next matrix.New logs in as a new device, and
// Enable gives it fresh keys; other people's clients see a new device.
//
// Room keys received so far (inbound Megolm sessions) are kept, never deleted, and the next
// Enable of the same session on a new device takes them over: the history the old device could
// read stays readable, with or without key backup. The pickle key must stay the same.
func Reset(ctx context.Context, c *matrix.Client) error {
	db := c.Database()
	acct := accountID(c)
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, table := range []string{"crypto_olm_session", "crypto_megolm_outbound_session", "crypto_secrets", "crypto_account"} {
			if _, err := db.Exec(ctx, "DELETE FROM "+table+" WHERE account_id = $1", acct); err != nil {
				return fmt.Errorf("clear %s: %w", table, err)
			}
		}
		return nil
	})
	if err != nil && !isMissingTable(err) {
		return fmt.Errorf("e2ee: reset %s: %w", c.DeviceID(), err)
	}
	if err := c.Logout(ctx); err != nil {
		return fmt.Errorf("e2ee: reset: log out device %s: %w", c.DeviceID(), err)
	}
	return nil
}

// isMissingTable tells a store that was never created (Reset before any Enable) from a real
// failure.
func isMissingTable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no such table") || strings.Contains(s, "does not exist")
}
