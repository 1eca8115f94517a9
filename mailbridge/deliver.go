package mailbridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
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
		g.noteFull(g.ctx)
		wait := g.opts.MaxRetryDelay
		if g.full.any(time.Now()) {
			wait = min(wait, fullRoomFor) // what another instance sent into a full room is not confirmed here
		}
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
		g.passes.Add(1)
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

// deliverOne posts one mail into one room, or schedules another try. The delivery is done
// once the outbox has sent what it posted (confirm.go).
func (g *Gateway) deliverOne(d delivery) {
	if d.recheck != "" {
		// A retried dead letter that DNS deferred: its checks run again first (recheck.go).
		raw, reason, again := g.recheck(g.ctx, d)
		if g.ctx.Err() != nil {
			return
		}
		if reason != "" {
			g.log.Warn("retried mail fails its sender checks again; dead-lettered", "spool_id", d.spoolID, "target", d.target, "reason", reason)
			if err := g.spool.recheckFailed(g.ctx, d, reason, again, raw); err != nil && g.ctx.Err() == nil {
				g.log.Error("dead-letter delivery", "spool_id", d.spoolID, "err", err)
			}
			return
		}
		d.message = raw
	}
	items, err := g.post(g.ctx, d)
	if g.ctx.Err() != nil {
		return // closing: the next Gateway tries again, and the idempotency key prevents a double
	}
	if err == nil {
		g.log.Debug("mail posted to the outbox", "spool_id", d.spoolID, "target", d.target, "items", len(items))
		g.afterPosted(items)
		return
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

// post converts the mail, stores it in the client's outbox, which sends it, and records the
// delivery as posted. It returns the outbox items the mail became: the message first, then its
// files. What it stores (the mail's thread entry, the outbox items, the delivery's state) is
// one transaction when the spool is in the client's database (atomically): one commit a mail,
// and after a crash never an item without its delivery's state.
//
// A reply goes into the thread of its conversation (see thread.go); its attachments follow it
// there. Inline images are uploaded first and shown in place in a room that is not encrypted,
// and follow the message as encrypted files in one that is. Attachments over the homeserver's
// upload limit are named in the message and not sent. A message over the event size limit is
// shortened and followed by the original mail as mail.eml.
func (g *Gateway) post(ctx context.Context, d delivery) ([]int64, error) {
	room, err := g.resolve(ctx, d)
	if err != nil {
		return nil, err
	}
	m, err := ParseWith(bytes.NewReader(d.message), ParseOptions{AuthServID: g.opts.Domain})
	if err != nil {
		// DATA refused what cannot be parsed, so this is a mail from an older or other
		// version: say that it arrived rather than lose it silently.
		msg := matrix.Notice(fmt.Sprintf("A mail to %s could not be read (malformed header); it is kept in the gateway's spool as number %d.", d.recipient, d.spoolID))
		var items []int64
		err := g.atomically(ctx, func(ctx context.Context) error {
			p, err := g.client.Send(ctx, room, msg, matrix.SendOptions{IdempotencyKey: idempotencyKey("", unstamped(d.message), room)})
			if err != nil {
				return fmt.Errorf("post mail %d into %s: %w", d.spoolID, room, err)
			}
			items = []int64{p.ID}
			return g.finishPost(ctx, d, items, nil)
		})
		return items, err
	}
	place, err := g.place(ctx, room, m, d.attempts)
	if err != nil {
		return nil, fmt.Errorf("thread of mail %d in %s: %w", d.spoolID, room, err)
	}
	limit := g.client.UploadLimit(ctx)
	for i := range m.Attachments {
		m.Attachments[i].tooLarge = limit > 0 && m.Attachments[i].Size > limit
	}
	key := idempotencyKey(m.MessageID, unstamped(d.message), room) // the same mail, whatever its Authentication-Results
	uploaded, err := g.uploadInline(ctx, room, m, key)
	if err != nil {
		return nil, fmt.Errorf("inline images of mail %d in %s: %w", d.spoolID, room, err)
	}
	msg := m.render(uploaded)
	if place.root != "" {
		msg = matrix.InThread(place.root, place.latest, msg)
	}
	emlFits := limit <= 0 || int64(len(d.message)) <= limit
	msg, tooLong := fitMail(msg, emlFits)
	var items []int64
	err = g.atomically(ctx, func(ctx context.Context) error {
		got, mark, err := g.store(ctx, d, room, m, place, msg, key, uploaded, tooLong && emlFits)
		if err != nil {
			return err
		}
		items = got
		return g.finishPost(ctx, d, items, mark)
	})
	return items, err
}

// store stores a converted mail in the outbox: its message, then its files and, when asked
// (withOriginal), the original mail; after it has recorded the mail's place in its thread. It
// returns the items, and what to record with them (the post's item in the thread entry). No
// network I/O: post runs it in a transaction.
func (g *Gateway) store(ctx context.Context, d delivery, room id.RoomID, m *Mail, place threadPlace, msg matrix.Message, key string, uploaded map[int]string, withOriginal bool) ([]int64, func(context.Context) error, error) {
	if err := g.remember(ctx, room, m, d.spoolID, place); err != nil {
		return nil, nil, err
	}
	p, err := g.client.Send(ctx, room, msg, matrix.SendOptions{IdempotencyKey: key})
	if errors.Is(err, matrix.ErrIdempotencyConflict) {
		// The key is the Message-ID and the room: a mail with this Message-ID is in the room
		// already, and this one differs only in what a relay added on the way (a header the
		// message shows, such as the sender check) or in the sender reusing an ID. Either way
		// it is the same mail as far as the gateway can tell, and is not posted twice.
		g.log.Info("mail with a Message-ID posted before, with other content; not posted again", "spool_id", d.spoolID, "room", room)
		if before := g.postedBefore(ctx, room, m); before != 0 {
			return []int64{before}, nil, nil
		}
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("post mail %d into %s: %w", d.spoolID, room, err)
	}
	mark := func(ctx context.Context) error { return g.posted(ctx, room, m, p.ID) }
	items := []int64{p.ID}
	// Each file's key names its part, so that it stays the same whatever else changes.
	next := func(a matrix.Attachment, part string) error {
		a.Thread = place.root
		f, err := g.client.SendFile(ctx, room, a, matrix.SendOptions{IdempotencyKey: key + "/" + part})
		if errors.Is(err, matrix.ErrIdempotencyConflict) {
			return nil // a file of the same mail, posted before (see above)
		}
		if err == nil {
			items = append(items, f.ID)
		}
		return err
	}
	for i, a := range m.Attachments {
		if _, shown := uploaded[i]; shown || a.tooLarge {
			continue
		}
		name := a.Name
		if name == "" {
			name = fmt.Sprintf("attachment-%d", i+1)
		}
		kind := matrix.FileKind
		if a.Inline {
			kind = matrix.ImageKind
		}
		if err := next(matrix.Attachment{Name: name, MimeType: a.MimeType, Data: a.Data, Kind: kind}, strconv.Itoa(i+1)); err != nil {
			return nil, nil, fmt.Errorf("post attachment %d of mail %d into %s: %w", i+1, d.spoolID, room, err)
		}
	}
	if withOriginal {
		if err := next(matrix.Attachment{Name: "mail.eml", MimeType: "message/rfc822", Data: d.message}, "original"); err != nil {
			return nil, nil, fmt.Errorf("post the original of mail %d into %s: %w", d.spoolID, room, err)
		}
	}
	return items, mark, nil
}

// fitMail shortens a message over the size of an encrypted event (which fits any room) and
// says where the original mail is; it reports whether it shortened.
func fitMail(msg matrix.Message, withOriginal bool) (matrix.Message, bool) {
	note := "\n\n[This mail is too long to show here in full; the original mail follows as mail.eml.]"
	if !withOriginal {
		note = "\n\n[This mail is too long to show here in full; the original is kept in the gateway's spool.]"
	}
	fitted, _, _, fits := matrix.FitWithin(msg, matrix.MaxEncryptedContentSize-len(note)-256)
	if fits {
		return msg, false
	}
	if c, ok := fitted.Content.(*event.MessageEventContent); ok {
		c.Body += note
	}
	return fitted, true
}

// uploadInline uploads the inline images of a mail for a room that is not encrypted, and
// returns their mxc URIs by attachment index. The URIs are stored, so that a retried delivery
// makes the same message (and the idempotency key finds it); they are stored under the
// mail's idempotency key, so the same mail spooled twice uses them too. In an encrypted room it uploads
// nothing: media in HTML cannot be encrypted, so the images follow as encrypted files.
func (g *Gateway) uploadInline(ctx context.Context, room id.RoomID, m *Mail, key string) (map[int]string, error) {
	some := false
	for _, a := range m.Attachments {
		some = some || (a.Inline && !a.tooLarge)
	}
	if !some {
		return nil, nil
	}
	encrypted, err := g.client.RoomEncrypted(ctx, room)
	if err != nil {
		return nil, err
	}
	if encrypted {
		return nil, nil
	}
	db := g.spool.db
	out := map[int]string{}
	for i, a := range m.Attachments {
		if !a.Inline || a.tooLarge {
			continue
		}
		part := strconv.Itoa(i) + "/" + a.ContentID
		var uri string
		err := db.QueryRow(ctx, `SELECT mxc FROM samtal_mail_media WHERE mail_key = $1 AND part = $2`, key, part).Scan(&uri)
		if errors.Is(err, sql.ErrNoRows) {
			name := a.Name
			if name == "" {
				name = "image-" + strconv.Itoa(i+1)
			}
			resp, uerr := g.client.Mautrix().UploadBytesWithName(ctx, a.Data, a.MimeType, name)
			if uerr != nil {
				return nil, fmt.Errorf("upload inline image %d: %w", i+1, uerr)
			}
			uri = resp.ContentURI.String()
			if _, err = db.Exec(ctx, `INSERT INTO samtal_mail_media (mail_key, part, mxc) VALUES ($1, $2, $3)
				ON CONFLICT (mail_key, part) DO NOTHING`, key, part, uri); err != nil {
				return nil, fmt.Errorf("record inline image: %w", err)
			}
			err = db.QueryRow(ctx, `SELECT mxc FROM samtal_mail_media WHERE mail_key = $1 AND part = $2`, key, part).Scan(&uri)
		}
		if err != nil {
			return nil, fmt.Errorf("read inline images: %w", err)
		}
		out[i] = uri
	}
	return out, nil
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
	// The template as spooled has the capture unfilled; the recipient, matched again, fills it
	// when it still routes to the same alias.
	if m, err := g.router.Match(d.recipient); err == nil && m.Room == d.target && m.Route.Create != nil {
		m.Route = &Route{Create: &spec}
		spec = *m.Spec()
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
