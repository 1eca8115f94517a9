package matrix

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/samtalhq/samtal/internal/backoff"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Bounds for failures that are not the homeserver's: an item fails after this many attempts.
const (
	// maxLocalAttempts bounds errors the outbox does not recognise (an encryption failure,
	// say): they may pass, but an item must not retry them forever.
	maxLocalAttempts = 5
	// maxEncryptionWaits bounds how long an item stored by a client with encryption waits
	// for encryption to be plugged in again (e2ee.Enable after a restart): at the default
	// MaxRetryDelay about ten minutes.
	maxEncryptionWaits = 40
)

// pendingBatch is how many pending items a lane reads at a time.
const pendingBatch = 256

// settleLooks is how many looks in the room, ResumeDelay apart, must miss an item whose
// earlier try may have reached the homeserver before it is sent again (deliver).
const settleLooks = 2

// errNotNeeded is what an attempt returns for the full text of an oversized message when the
// room turned out to be one where the message fitted whole.
var errNotNeeded = errors.New("matrix: outbox: attachment not needed")

// wake makes sure a lane is sending for room.
func (o *outbox) wake(room id.RoomID, recover bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if kick, ok := o.lanes[room]; ok {
		select {
		case kick <- struct{}{}:
		default:
		}
		return
	}
	if o.ctx.Err() != nil || o.held {
		return
	}
	kick := make(chan struct{}, 1)
	o.lanes[room] = kick
	o.wg.Add(1)
	go o.runLane(room, kick, recover)
}

// runLane sends a room's pending items in order until there are none. It works the room only
// while it holds the room's lease, renewed as it goes.
func (o *outbox) runLane(room id.RoomID, kick chan struct{}, recover bool) {
	defer o.wg.Done()
	var after int64
	prevFailed := false  // whether the item before this one failed for good
	var leased time.Time // when the lease was last claimed or renewed; zero: not held
	rescan := false      // reconcile the next batch too, without waiting again
	renewEvery := o.opts.LeaseDuration / 3
	for {
		if o.isHeld() {
			o.endLane(room)
			return
		}
		if o.takeRewind(room) {
			after, prevFailed = 0, false // a requeued item is behind the lane
		}
		rows, err := o.pending(room, after)
		if err != nil {
			if o.ctx.Err() != nil {
				return // closing
			}
			o.c.log.Error("outbox: read pending sends", "room", room, "err", err)
			if !o.sleep(time.Second) {
				return
			}
			continue
		}
		if len(rows) == 0 {
			// Released while this lane is still the room's, so that a lane started after it
			// never loses its lease to this one's release.
			if !leased.IsZero() {
				if !o.release(room, kick) {
					continue // more came while it waited: the lease is kept
				}
				leased = time.Time{}
			}
			o.mu.Lock()
			select {
			case <-kick: // something arrived since our query
				o.mu.Unlock()
				continue
			default:
			}
			delete(o.lanes, room)
			o.mu.Unlock()
			return
		}
		if time.Since(leased) > renewEvery {
			ok, takeover, err := o.claim(room)
			if err != nil || !ok {
				// Another process works this room (or the database is away): what it leaves
				// is still here when we try again.
				leased = time.Time{}
				if err != nil && o.ctx.Err() == nil {
					o.c.log.Warn("outbox: cannot claim room", "room", room, "err", err)
				}
				if !o.sleep(renewEvery) {
					return
				}
				continue
			}
			if takeover {
				o.c.log.Info("outbox: taking over a room whose sender stopped", "room", room)
				recover = true
			}
			leased = time.Now()
		}
		if recover {
			if !rescan && !o.sleep(o.opts.ResumeDelay) {
				return
			}
			rescan = false
			batch := rows
			var ok bool
			if rows, ok = o.reconcile(room, rows); !ok {
				return // closing
			}
			recover = false
			if len(rows) == 0 && len(batch) == pendingBatch {
				// A full batch, every item of it already in the room: what may have been
				// under way when the last run ended comes after it.
				after, recover, rescan = batch[len(batch)-1].id, true, true
				continue
			}
		}
		for _, r := range rows {
			if time.Since(leased) > renewEvery {
				break // renew before going on
			}
			if (r.kind == kindOverflow || r.kind == kindOverflowEnc) && prevFailed {
				// The full text of a message that failed does not go out without it.
				o.fail(r, fmt.Errorf("%w: the message this is the full text of failed", ErrInvalidContent), r.attempts)
				after = r.id
				continue
			}
			ok, failed := o.deliver(r)
			prevFailed = failed
			if !ok {
				if o.isHeld() {
					o.endLane(room)
				}
				return // closing, or waiting for a new login
			}
			after = r.id
		}
	}
}

// endLane forgets room's lane, which stops with items left.
func (o *outbox) endLane(room id.RoomID) {
	o.mu.Lock()
	delete(o.lanes, room)
	o.mu.Unlock()
}

func (o *outbox) isHeld() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.held
}

// claim takes or renews the lease on room's lane. takeover is true when the lease belonged to
// another holder whose time ran out: what it sent without recording it must be looked for.
func (o *outbox) claim(room id.RoomID) (ok, takeover bool, err error) {
	now := time.Now().UnixMilli()
	var prev string
	var prevExpiry int64
	err = o.db.QueryRow(o.ctx, `SELECT holder, expires_at FROM samtal_outbox_lease WHERE session = $1 AND room_id = $2`,
		o.c.name, room).Scan(&prev, &prevExpiry)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, false, err
	}
	res, err := o.db.Exec(o.ctx, `INSERT INTO samtal_outbox_lease (session, room_id, holder, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (session, room_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE samtal_outbox_lease.holder = excluded.holder OR samtal_outbox_lease.expires_at < $5`,
		o.c.name, room, o.holder, now+o.opts.LeaseDuration.Milliseconds(), now)
	if err != nil {
		return false, false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, false, err
	}
	return n == 1, n == 1 && prev != "" && prev != o.holder, nil
}

// release gives up room's lease once the lane's last sends are recorded, so that another
// process may take the room at once and finds them sent. It reports false, keeping the lease,
// when kick says more came meanwhile: the marks are written in batches (commitMarks), and a
// lane that waited for them before it took the next item made each of a steady trickle of
// sends wait for the mark of the one before.
func (o *outbox) release(room id.RoomID, kick <-chan struct{}) bool {
	for o.unrecorded(room) {
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-kick:
			t.Stop()
			return false
		case <-o.ctx.Done():
			t.Stop()
			return true // closing: the lease runs out by itself
		case <-t.C:
		}
	}
	_, err := o.db.Exec(o.ctx, `DELETE FROM samtal_outbox_lease WHERE session = $1 AND room_id = $2 AND holder = $3`, o.c.name, room, o.holder)
	if err != nil && o.ctx.Err() == nil {
		o.c.log.Warn("outbox: release room", "room", room, "err", err)
	}
	return true
}

// unrecorded reports whether items sent into room wait for their marks to be written.
func (o *outbox) unrecorded(room id.RoomID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.results {
		if r.room == room {
			return true
		}
	}
	return false
}

func (o *outbox) pending(room id.RoomID, after int64) ([]row, error) {
	// Items sent whose marks are not written yet, taken before the query: an item whose mark
	// is written after this moment is still in this set, and one written before is "sent" in
	// what the query reads.
	o.mu.Lock()
	inflight := make(map[int64]bool, len(o.results))
	for id := range o.results {
		inflight[id] = true
	}
	o.mu.Unlock()
	rows, err := o.c.q.Query(o.ctx, `SELECT id, kind, event_type, content, content_enc, upload, upload_mode,
			COALESCE(idempotency_key, ''), created_at, attempts, encrypting FROM samtal_outbox
		WHERE session = $1 AND room_id = $2 AND state = $3 AND id > $4 AND (user_id = $5 OR user_id = '')
		ORDER BY id LIMIT $6`,
		o.c.name, room, statePending, after, o.c.UserID(), pendingBatch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		r := row{room: room}
		var content, contentEnc, upload string
		var created int64
		var encrypting int
		if err := rows.Scan(&r.id, &r.kind, &r.evtType, &content, &contentEnc, &upload, &r.uploadMode,
			&r.key, &created, &r.attempts, &encrypting); err != nil {
			return nil, err
		}
		r.content, r.contentEnc, r.upload = json.RawMessage(content), json.RawMessage(contentEnc), json.RawMessage(upload)
		r.createdAt = time.UnixMilli(created)
		r.encrypting = encrypting != 0
		if inflight[r.id] {
			continue // sent; its mark is on the way to the database
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// deliver sends one item, retrying what may pass, and records the outcome; failed tells
// whether it failed for good. ok is false when the outbox is closing or the session's token
// was refused (the item stays pending).
func (o *outbox) deliver(r row) (ok, failed bool) {
	txn := o.txnID(r.id)
	unknown := o.takeRecheck(r.id) // whether an earlier try may have reached the server
	looks := 0                     // looks in the room since that try, not finding the item
	// When the first try of this call that may have reached the server began: its event can be
	// no older, so a look pages back no further. Zero: any time since the item was stored.
	var since time.Time
	if o.takeSettling(r.id) {
		unknown, looks = true, 1 // reconcile looked once after a restart
	}
	attempt := r.attempts
	for {
		if unknown && looks < settleLooks {
			if looks > 0 {
				// Not in the room at the last look. A homeserver can store the event of a
				// request whose client gave up or died after it has logged that request as
				// failed, and such a request is not in its transaction cache: a resend with
				// the same transaction ID would be a second event. So the item goes out
				// again only once a second look, a while later, has not found it either.
				if !o.sleep(o.opts.ResumeDelay) {
					return false, false
				}
			}
			look := r
			if !since.IsZero() {
				look.createdAt = since
			}
			found, err := o.findSent(r.room, []row{look})
			switch {
			case err == nil && found[r.id] != "":
				o.succeed(r, found[r.id], attempt)
				return true, false
			case err == nil:
				if looks++; looks < settleLooks {
					continue
				}
			default:
				// Whether the earlier try arrived cannot be told yet. Sending again now
				// would double it when it did: the server forgets transaction IDs when it
				// restarts. Look again later; only a refusal to read the room goes on.
				err = wrapErr(err)
				switch classify(err) {
				case failToken:
					o.hold(err)
					return false, false
				case failUnreachable, failTemporary, failLocal, failCancelled:
					if o.ctx.Err() != nil {
						return false, false
					}
					delay := max(o.backoff(attempt+1, err), o.opts.ResumeDelay)
					o.c.log.Warn("outbox: cannot check the room for an earlier try; waiting", "room", r.room, "id", r.id, "retry_in", delay, "err", err)
					if !o.sleep(delay) {
						return false, false
					}
					continue
				}
			}
		}
		select {
		case o.sem <- struct{}{}:
		case <-o.ctx.Done():
			return false, false
		}
		tried := time.Now()
		evt, encrypted, err := o.attempt(&r, txn)
		<-o.sem
		if err == nil {
			r.encrypted = encrypted
			o.succeed(r, evt, attempt+1)
			return true, false
		}
		if errors.Is(err, errNotNeeded) {
			o.skip(r)
			return true, false
		}
		if o.ctx.Err() != nil {
			return false, false
		}
		err = wrapErr(err)
		kind := classify(err)
		if kind == failToken {
			o.hold(err)
			return false, false
		}
		attempt++
		o.recordAttempt(r.id, attempt)
		if o.final(r, kind, attempt) {
			o.fail(r, err, attempt)
			return true, true
		}
		// A refusal, a rate limit or a send that waits for encryption never reached the
		// room; anything else (no answer, a broken connection) may have, so check the room
		// before trying again.
		delay := o.backoff(attempt, err)
		if kind == failUnreachable || kind == failLocal || kind == failCancelled {
			if !unknown {
				since = tried // nothing earlier is in doubt
			}
			unknown, looks = true, 0
			delay = max(delay, o.opts.ResumeDelay)
		}
		o.c.log.Warn("outbox: send failed, retrying", "room", r.room, "id", r.id, "attempt", attempt, "retry_in", delay, "err", err)
		if !o.sleep(delay) {
			return false, false
		}
	}
}

// final reports whether a failure of this kind, at this attempt, ends the item.
func (o *outbox) final(r row, kind failKind, attempt int) bool {
	limited := o.opts.MaxAttempts > 0 && attempt >= o.opts.MaxAttempts
	switch kind {
	case failRefused, failInvalid:
		return true
	case failNoEncryption:
		// An item stored by a client with encryption waits for it to be plugged in again;
		// one stored by a client without cannot succeed.
		return !r.encrypting || attempt >= maxEncryptionWaits || limited
	case failLocal:
		return attempt >= maxLocalAttempts || limited
	}
	return limited
}

// attempt makes one try. What depends on the homeserver is decided here, each time: whether
// the room is encrypted (an unknown answer is an error, never "no"), and so which content
// goes out and how files are uploaded. In an encrypted room the content is encrypted here,
// on each attempt: a retry may carry other ciphertext, but its transaction ID makes the
// server keep the first event.
func (o *outbox) attempt(r *row, txn string) (evt id.EventID, encrypted bool, err error) {
	encrypted, err = o.c.RoomEncrypted(o.ctx, r.room)
	if err != nil {
		return "", false, err
	}
	var enc Encryption
	if encrypted {
		// Checked on every attempt: items resumed after a restart may go out before
		// e2ee.Enable has run, and must then wait for it.
		if enc = o.c.encryption(); enc == nil {
			return "", true, fmt.Errorf("%w: %s", ErrEncryptionRequired, r.room)
		}
	}
	content := r.content
	switch r.kind {
	case kindMessage:
		if encrypted && len(r.contentEnc) > 0 {
			content = r.contentEnc
		}
		if encrypted && plaintextMedia(content) {
			// A file message the caller built around an unencrypted upload: it is not
			// referenced from an encrypted room, which would make it look protected.
			return "", true, fmt.Errorf("%w: the file was uploaded unencrypted and %s is encrypted; send it with SendFile", ErrInvalidContent, r.room)
		}
	case kindOverflowEnc:
		if !encrypted {
			return "", false, errNotNeeded
		}
		fallthrough
	case kindFile, kindOverflow:
		if content, err = o.uploaded(r, encrypted); err != nil {
			return "", encrypted, err
		}
	}
	typ := event.Type{Type: r.evtType, Class: event.MessageEventType}
	var body any = withTxnKey(content, txn)
	if encrypted {
		// From encryption until the server has the event, no removal from the room (which
		// would make this key one a removed member holds) comes in between.
		g := o.c.gates.of(r.room)
		g.RLock()
		defer g.RUnlock()
		ciphertext, err := enc.Encrypt(o.ctx, r.room, typ, body)
		if err != nil {
			return "", true, fmt.Errorf("matrix: encrypt for %s: %w", r.room, err)
		}
		typ, body = event.EventEncrypted, ciphertext
	}
	resp, err := o.c.send.SendMessageEvent(o.ctx, r.room, typ, body, mautrix.ReqSendEvent{TransactionID: txn, DontEncrypt: true})
	if err != nil {
		return "", encrypted, err
	}
	return resp.EventID, encrypted, nil
}

// uploaded returns the file message of a file item, uploading its data first unless that was
// done before in the same way (encrypted or not).
func (o *outbox) uploaded(r *row, encrypted bool) (json.RawMessage, error) {
	mode := 1
	if encrypted {
		mode = 2
	}
	if r.uploadMode == mode && len(r.upload) > 0 {
		return r.upload, nil
	}
	var meta fileMeta
	if err := json.Unmarshal(r.content, &meta); err != nil {
		return nil, fmt.Errorf("%w: stored file item %d: %w", ErrInvalidContent, r.id, err)
	}
	var data []byte
	if err := o.db.QueryRow(o.ctx, `SELECT data FROM samtal_outbox WHERE id = $1`, r.id).Scan(&data); err != nil {
		return nil, fmt.Errorf("matrix: outbox: read file of item %d: %w", r.id, err)
	}
	msg, err := o.c.upload(o.ctx, Attachment{Name: meta.Name, MimeType: meta.MimeType, Data: data, Kind: meta.Kind, Width: meta.Width, Height: meta.Height}, encrypted)
	if err != nil {
		return nil, err
	}
	if meta.Thread != "" {
		msg = InThread(meta.Thread, "", msg)
	}
	content, err := json.Marshal(msg.Content)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidContent, err)
	}
	// Kept, so that a retry after an error or a restart sends the same file.
	if _, err := o.db.Exec(o.ctx, `UPDATE samtal_outbox SET upload = $1, upload_mode = $2 WHERE id = $3`, string(content), mode, r.id); err != nil {
		return nil, fmt.Errorf("matrix: outbox: record upload of item %d: %w", r.id, err)
	}
	r.upload, r.uploadMode = content, mode
	return content, nil
}

// plaintextMedia reports whether content is a media message that points at an unencrypted
// upload (url rather than file).
func plaintextMedia(content json.RawMessage) bool {
	var m struct {
		MsgType event.MessageType `json:"msgtype"`
		URL     string            `json:"url"`
	}
	if json.Unmarshal(content, &m) != nil || m.URL == "" {
		return false
	}
	switch m.MsgType {
	case event.MsgFile, event.MsgImage, event.MsgVideo, event.MsgAudio:
		return true
	}
	return false
}

// recordAttempt writes how many tries an item has had, so that the bounds hold across
// restarts and an operator sees what is stuck.
func (o *outbox) recordAttempt(rowID int64, attempts int) {
	if _, err := o.db.Exec(context.Background(), `UPDATE samtal_outbox SET attempts = $1 WHERE id = $2`, attempts, rowID); err != nil {
		o.c.log.Warn("outbox: record attempt", "id", rowID, "err", err)
	}
}

// hold stops the outbox until a new login: the homeserver refused the session's token. The
// items stay pending; a client logged in again (New with Options.Login) sends them.
func (o *outbox) hold(cause error) {
	err := fmt.Errorf("matrix: session %q: %w", o.c.name, cause)
	o.mu.Lock()
	if o.held {
		o.mu.Unlock()
		return
	}
	o.held, o.heldErr = true, fmt.Errorf("matrix: outbox: the item stays pending until a new login: %w", cause)
	// Recorded before waiters hear of it, so that Client.Err says so once Wait has returned.
	o.c.recordErr(err)
	close(o.heldCh)
	o.mu.Unlock()
	o.c.log.Error("outbox: the homeserver refused the session; sends wait for a new login", "err", cause)
	if o.c.onError != nil {
		o.c.onError(err)
	}
}

func (o *outbox) backoff(attempt int, err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter > 0 {
		return backoff.Server(he.RetryAfter)
	}
	return backoff.Delay(attempt, o.opts.MinRetryDelay, o.opts.MaxRetryDelay)
}

func (o *outbox) sleep(d time.Duration) bool { return backoff.Sleep(o.ctx, d) }

// failKind is how the outbox treats a failed attempt.
type failKind int

const (
	failLocal        failKind = iota // not recognised: retried a bounded number of times
	failRefused                      // the homeserver said no (4xx other than 429): final
	failTemporary                    // rate limit or server error: retried
	failUnreachable                  // no answer: retried, and the room checked first
	failToken                        // the token was refused: wait for a new login
	failNoEncryption                 // encrypted room, no encryption plugged in
	failInvalid                      // cannot succeed (invalid content, too large): final
	failCancelled                    // the caller's or the outbox's context ended
)

// classify sorts a failed attempt's error (after wrapErr).
func classify(err error) failKind {
	var he *HTTPError
	switch {
	case err == nil:
		return failLocal
	case errors.Is(err, ErrUnknownToken):
		return failToken
	case errors.As(err, &he):
		if he.Temporary() {
			return failTemporary
		}
		return failRefused
	case errors.Is(err, ErrUnreachable):
		return failUnreachable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return failCancelled
	case errors.Is(err, ErrEncryptionRequired):
		return failNoEncryption
	case errors.Is(err, ErrInvalidContent), errors.Is(err, ErrTooLarge):
		return failInvalid
	case transportError(err):
		return failUnreachable
	}
	return failLocal
}
