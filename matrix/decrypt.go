package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// utdKeep is how long an undecryptable event is retried before it is given up on.
	utdKeep = 7 * 24 * time.Hour
	// utdRetryBatch bounds how many stored undecryptable events one sync batch retries; the
	// least tried go first, so a heap of hopeless ones cannot keep newer ones from their turn.
	utdRetryBatch = 200
	// utdMax bounds the stored undecryptable events of a session: past it, new ones are logged
	// as errors and not kept (a flood of fake encrypted events must not fill the disk).
	utdMax = 10000
)

// undecryptable is an encrypted event waiting for its keys.
type undecryptable struct {
	evt    *event.Event
	reason string
}

// decrypt replaces an encrypted event by its cleartext when the client has encryption. An
// event that cannot be decrypted yet is returned unchanged with ok=false, to be stored and
// retried; handlers see it only once it is decrypted.
//
// An event that can never be decrypted (tampered, replayed, from a device the trust policy
// refuses) is returned with ok=false and final=true: it is counted and logged, not retried.
func (s *Syncer) decrypt(ctx context.Context, evt *Event) (out *Event, ok bool, reason string, final bool) {
	enc := s.c.encryption()
	if enc == nil || evt.invite {
		return evt, true, "", false
	}
	if evt.Type.Type != event.EventEncrypted.Type {
		if evt.StateKey == nil && (evt.Type == event.EventMessage || evt.Type == event.EventSticker) && s.c.knownEncrypted(evt.RoomID) {
			// No client sends plaintext messages into an encrypted room; someone (a member or
			// the homeserver) forging one must not get past the trust policy.
			return evt, false, "unencrypted message in an encrypted room", true
		}
		return evt, true, "", false
	}
	decrypted, err := enc.Decrypt(ctx, evt.Event)
	if err != nil {
		return evt, false, err.Error(), !errors.Is(err, ErrKeysMissing)
	}
	decrypted.RoomID = evt.RoomID
	return &Event{Event: decrypted, Client: s.c}, true, "", false
}

// retryUndecryptable tries the stored undecryptable events again, oldest first, and returns
// those that can now be read (to hand out) and those given up on (too old); both are removed
// when the batch commits.
func (s *Syncer) retryUndecryptable(ctx context.Context) (late []*Event, drop, again []id.EventID, err error) {
	if s.c.encryption() == nil {
		return nil, nil, nil, nil
	}
	rows, err := s.c.db.Query(ctx, `SELECT event_id, room_id, event_json, first_seen FROM samtal_utd
		WHERE session = $1 ORDER BY tries, first_seen LIMIT $2`, s.c.name, utdRetryBatch)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("matrix: sync: read undecryptable events: %w", err)
	}
	type stored struct {
		id        id.EventID
		room      id.RoomID
		raw       string
		firstSeen time.Time
	}
	var all []stored
	for rows.Next() {
		var st stored
		var first int64
		if err := rows.Scan(&st.id, &st.room, &st.raw, &first); err != nil {
			rows.Close()
			return nil, nil, nil, err
		}
		st.firstSeen = time.UnixMilli(first)
		all = append(all, st)
	}
	rows.Close()
	for _, st := range all {
		var raw event.Event
		if err := json.Unmarshal([]byte(st.raw), &raw); err != nil {
			drop = append(drop, st.id)
			continue
		}
		evt := s.prepare(st.room, &raw, false)
		out, ok, reason, final := s.decrypt(ctx, evt)
		switch {
		case final:
			s.rejected.Add(1)
			s.c.log.Error("sync: event refused on retry", "room", st.room, "event", st.id, "reason", reason)
			drop = append(drop, st.id)
		case ok:
			s.lateDecrypted.Add(1)
			s.c.log.Info("sync: keys arrived for an event that could not be decrypted", "room", st.room, "event", st.id, "waited", time.Since(st.firstSeen).Round(time.Second))
			late = append(late, out)
		case time.Since(st.firstSeen) > utdKeep:
			s.c.log.Error("sync: giving up on an event that could not be decrypted", "room", st.room, "event", st.id, "since", st.firstSeen)
			drop = append(drop, st.id)
		default:
			again = append(again, st.id)
		}
	}
	return late, drop, again, nil
}

// storeUndecryptable records events to retry, and forgets retried ones, inside the commit.
func (s *Syncer) storeUndecryptable(ctx context.Context, b *batch) error {
	stored := 0
	if len(b.utd) > 0 {
		if err := s.c.db.QueryRow(ctx, `SELECT COUNT(*) FROM samtal_utd WHERE session = $1`, s.c.name).Scan(&stored); err != nil {
			return err
		}
	}
	for _, u := range b.utd {
		if stored >= utdMax {
			s.c.log.Error("sync: too many events wait for keys; this one is not kept", "room", u.evt.RoomID, "event", u.evt.ID, "sender", u.evt.Sender)
			continue
		}
		stored++
		raw, err := json.Marshal(u.evt)
		if err != nil {
			return err
		}
		if _, err := s.c.db.Exec(ctx, `INSERT INTO samtal_utd (session, event_id, room_id, event_json, first_seen, reason)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session, event_id) DO NOTHING`,
			s.c.name, u.evt.ID, u.evt.RoomID, string(raw), time.Now().UnixMilli(), u.reason); err != nil {
			return fmt.Errorf("matrix: sync: store undecryptable event %s: %w", u.evt.ID, err)
		}
	}
	for _, evt := range b.retried {
		if _, err := s.c.db.Exec(ctx, `UPDATE samtal_utd SET tries = tries + 1 WHERE session = $1 AND event_id = $2`, s.c.name, evt); err != nil {
			return err
		}
	}
	for _, evt := range b.resolved {
		if _, err := s.c.db.Exec(ctx, `DELETE FROM samtal_utd WHERE session = $1 AND event_id = $2`, s.c.name, evt); err != nil {
			return err
		}
	}
	return nil
}
