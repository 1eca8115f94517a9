package mailbridge

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/samtalhq/samtal/internal/storage"
)

// A dead letter that DNS deferred is checked again. A mail taken from IMAP whose sender could
// not be authenticated because DNS did not answer (reasonIMAPUnverifiable,
// reasonIMAPDMARCUnsure) is spooled dead for the rooms whose routes needed the answer, as a
// mail SMTP would have deferred with 451. Its delivery remembers how to check it again
// (samtal_mail_delivery.recheck). When an admin retries it, once DNS answers, the worker runs
// the route's sender checks again before it posts: a mail that now passes is posted with the
// new verdict on top; one that now fails (a forged sender, say) is dead again with the new
// reason, and a retry after that posts it as an admin's decision, as for any other dead
// letter; one that DNS still defers is dead again, to be retried later. Before, a retry posted
// such a mail unchecked, forged or not.

// recheckIMAP prefixes a delivery's recheck for mail from IMAP; the trusted authserv-id
// (IMAPOptions.TrustAuthServID) follows.
const recheckIMAP = "imap:"

// deferredByDNS reports whether reason is a refusal that only lacked a DNS answer.
func deferredByDNS(reason string) bool {
	return reason == reasonIMAPUnverifiable || reason == reasonIMAPDMARCUnsure
}

// recheck runs the checks a delivery's recheck names on its mail. It returns the mail with the
// new verdict on top (nil when there is none), why the route refuses it now ("" to post it),
// and whether that refusal is once more for want of DNS (the recheck stays for the next retry).
func (g *Gateway) recheck(ctx context.Context, d delivery) (raw []byte, reason string, again bool) {
	authServID, ok := strings.CutPrefix(d.recheck, recheckIMAP)
	if !ok {
		return nil, fmt.Sprintf("unknown check %q to run again: spooled by a newer version of samtal?", d.recheck), true
	}
	m, err := g.router.Match(d.recipient)
	if err != nil {
		return nil, fmt.Sprintf("no route takes %s any more", d.recipient), true
	}
	base := unstamped(d.message)
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(base)))
	if err != nil {
		return nil, "the mail's header cannot be read", false
	}
	header := message.Header{Header: h}
	env, v := g.imapVerdict(ctx, authServID, d.mailFrom, base, header)
	if reason := g.imapPolicy(m, v, proven(envelope{}, v, header)); reason != "" {
		return g.stamp(base, env, v), reason, deferredByDNS(reason)
	}
	v.overridden = overriddenFor([]Match{m}, v.dmarc)
	return g.stamp(base, env, v), "", false
}

// recheckFailed sends a delivery whose mail failed its checks again back to the dead letters,
// with the new reason. again keeps its recheck for the next retry; else a retry posts the mail,
// and the spool keeps it with the verdict found (raw), which the room then shows.
func (s *spool) recheckFailed(ctx context.Context, d delivery, reason string, again bool, raw []byte) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		recheck := ""
		if again {
			recheck = d.recheck
		} else if raw != nil {
			if err := storage.SecureDelete(ctx, s.db); err != nil { // the old copy is not left in free pages
				return err
			}
			if _, err := s.db.Exec(ctx, `UPDATE samtal_mail_spool SET message = $1 WHERE id = $2`, raw, d.spoolID); err != nil {
				return err
			}
		}
		_, err := s.db.Exec(ctx, `UPDATE samtal_mail_delivery SET state = 2, attempts = attempts + 1, last_error = $1, recheck = $2,
			claimed_by = '', claimed_until = 0 WHERE spool_id = $3 AND target = $4`, reason, recheck, d.spoolID, d.target)
		return err
	})
	if err != nil {
		return fmt.Errorf("mailbridge: dead-letter mail %d for %s again: %w", d.spoolID, d.target, err)
	}
	s.metrics.Delivery(OutcomeDead)
	return nil
}
