package mailbridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/backoff"
	"github.com/samtalhq/samtal/matrix"
)

// deliveryBatch is how many due deliveries the worker reads at a time.
const deliveryBatch = 32

// deliverLoop is the delivery worker: it posts spooled mail until Close, and sleeps until the
// next mail is spooled or the next retry is due.
func (g *Gateway) deliverLoop() {
	defer g.worker.Done()
	for {
		g.deliverDue()
		wait := g.opts.MaxRetryDelay
		if next, ok, err := g.spool.nextAttempt(g.ctx); err != nil {
			wait = g.opts.MinRetryDelay
		} else if ok {
			wait = min(max(time.Until(next), 0), wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-g.ctx.Done():
			t.Stop()
			return
		case <-g.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// deliverDue delivers every delivery that is due now.
func (g *Gateway) deliverDue() {
	for g.ctx.Err() == nil {
		due, err := g.spool.due(g.ctx, time.Now(), deliveryBatch)
		if err != nil {
			if g.ctx.Err() == nil {
				g.log.Error("read spool", "err", err)
			}
			return
		}
		if len(due) == 0 {
			return
		}
		for _, d := range due {
			if g.ctx.Err() != nil {
				return
			}
			g.deliverOne(d)
		}
	}
}

// deliverOne posts one mail into one room, or schedules another try.
func (g *Gateway) deliverOne(d delivery) {
	outboxID, err := g.post(g.ctx, d)
	if g.ctx.Err() != nil {
		return // closing: the next Gateway tries again, and the idempotency key prevents a double
	}
	if err == nil {
		err = g.spool.delivered(g.ctx, d, outboxID)
		if err == nil {
			g.log.Info("mail delivered", "spool_id", d.spoolID, "target", d.target, "outbox_id", outboxID)
			return
		}
	}
	if time.Since(d.receivedAt) >= g.opts.DeadLetterAfter {
		g.log.Error("mail delivery failed for too long; dead-lettered until retried", "spool_id", d.spoolID, "target", d.target, "attempts", d.attempts+1, "err", err)
		if err := g.spool.giveUp(g.ctx, d, err.Error()); err != nil && g.ctx.Err() == nil {
			g.log.Error("dead-letter delivery", "spool_id", d.spoolID, "err", err)
		}
		return
	}
	wait := backoff.Delay(d.attempts+1, g.opts.MinRetryDelay, g.opts.MaxRetryDelay)
	g.log.Warn("mail delivery failed; will retry", "spool_id", d.spoolID, "target", d.target, "attempt", d.attempts+1, "retry_in", wait, "err", err)
	if err := g.spool.retryLater(g.ctx, d, time.Now().Add(wait), err.Error()); err != nil && g.ctx.Err() == nil {
		g.log.Error("reschedule delivery", "spool_id", d.spoolID, "err", err)
	}
}

// post converts the mail and stores it in the client's outbox, which sends it. It returns the
// outbox ID once the message is stored there.
func (g *Gateway) post(ctx context.Context, d delivery) (int64, error) {
	room, err := g.resolve(ctx, d)
	if err != nil {
		return 0, err
	}
	m, err := Parse(bytes.NewReader(d.message))
	var msg matrix.Message
	if err != nil {
		// DATA refused what cannot be parsed, so this is a mail from an older or other
		// version: say that it arrived rather than lose it silently.
		msg = matrix.Notice(fmt.Sprintf("A mail to %s could not be read (malformed header); it is kept in the gateway's spool as number %d.", d.recipient, d.spoolID))
		m = &Mail{}
	} else {
		msg = m.Message()
	}
	key := idempotencyKey(m.MessageID, unstamped(d.message), room) // the same mail, whatever its Authentication-Results
	p, err := g.client.Send(ctx, room, msg, matrix.SendOptions{IdempotencyKey: key})
	if err != nil {
		return 0, fmt.Errorf("post mail %d into %s: %w", d.spoolID, room, err)
	}
	for i, a := range m.Attachments {
		if err := g.postAttachment(ctx, room, a, i, key+"/"+strconv.Itoa(i+1)); err != nil {
			return 0, fmt.Errorf("post attachment %d of mail %d into %s: %w", i+1, d.spoolID, room, err)
		}
	}
	return p.ID, nil
}

// postAttachment sends one attachment as a file (encrypted in an encrypted room, by the
// client). One larger than the homeserver accepts is replaced by a notice saying so, since
// trying again would not help.
func (g *Gateway) postAttachment(ctx context.Context, room id.RoomID, a Attachment, i int, key string) error {
	name := a.Name
	if name == "" {
		name = fmt.Sprintf("attachment-%d", i+1)
	}
	_, err := g.client.SendFile(ctx, room, matrix.Attachment{Name: name, MimeType: a.MimeType, Data: a.Data}, matrix.SendOptions{IdempotencyKey: key})
	if errors.Is(err, matrix.ErrTooLarge) {
		note := matrix.Notice(fmt.Sprintf("The attachment %s (%d bytes) is larger than the homeserver accepts; it is kept in the gateway's spool.", name, a.Size))
		_, err = g.client.Send(ctx, room, note, matrix.SendOptions{IdempotencyKey: key})
	}
	return err
}

// resolve returns the room ID of a delivery's target, creating an alias room from its
// template when the route asked for that.
func (g *Gateway) resolve(ctx context.Context, d delivery) (id.RoomID, error) {
	if strings.HasPrefix(d.target, "!") {
		return id.RoomID(d.target), nil
	}
	alias := id.RoomAlias(d.target)
	if d.createSpec == "" {
		return g.client.ResolveAlias(ctx, alias)
	}
	var spec matrix.RoomSpec
	if err := json.Unmarshal([]byte(d.createSpec), &spec); err != nil {
		return "", fmt.Errorf("read room template for %s: %w", alias, err)
	}
	room, created, err := g.client.EnsureRoom(ctx, alias, spec)
	if err != nil {
		return "", err
	}
	if created {
		g.log.Info("room created for mail", "alias", alias, "room", room)
	}
	return room, nil
}

// idempotencyKey names the post of one mail into one room, so that the same mail spooled
// twice (a client that retried after a lost 250, a relay that delivered it twice) is posted
// once. It is the Message-ID, or the content where the mail has none, and the room.
func idempotencyKey(messageID string, raw []byte, room id.RoomID) string {
	h := sha256.New()
	if messageID != "" {
		h.Write([]byte("message-id\x00" + messageID))
	} else {
		sum := sha256.Sum256(raw)
		h.Write([]byte("content\x00"))
		h.Write(sum[:])
	}
	h.Write([]byte("\x00" + string(room)))
	return "mailbridge/" + hex.EncodeToString(h.Sum(nil))[:48]
}
