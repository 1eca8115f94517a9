package matrix

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// rewind is where a Syncer asks again after a failed sync or a restart: the token its last
// committed batch was requested with, and the events handed out since that token, which are
// not handed out twice. With encryption, the to-device messages handed to the crypto machine
// since that token are among them: the server keeps a to-device message until the next since
// token is used, so an answer from the rewind point can hold it again, and an Olm message
// decrypted a second time fails (its one-time key is used up), which mautrix logs as an error.
//
// A homeserver that is going down can answer the sync in progress with less than it has: Dendrite
// (0.13.8) cut short by SIGTERM answers it with the room timelines it could not read left out and
// a next_batch past them, and its later syncs never show those events. The answer just before a
// failed sync is therefore not trusted: once the server is back, the Syncer syncs again from the
// token before it, which any server answers in full. The rewind point is stored with the sync
// token, so that a Syncer that stopped before its next sync (the bot and the homeserver
// restarted together) does the same when it starts again.
type rewind struct {
	since string          // "" when there is no batch to go back over (none yet, or the first sync)
	seen  map[string]bool // deliveryKey of each event handed out since since
}

// maxStoredSeen bounds how many handed-out events a stored rewind point keeps. A rewind point
// with more is not stored (a restart after such a batch does not ask for it again): a partial
// list would hand out the rest twice.
const maxStoredSeen = 5000

// from returns the token to sync from and the events to skip: since itself and nothing when
// no rewind is due.
func (r rewind) from(since string, due bool) (string, map[string]bool) {
	if !due || r.since == "" {
		return since, nil
	}
	return r.since, r.seen
}

// after returns the rewind point once a batch requested with token from, whose events have the
// given keys, is committed: a batch from the rewind point adds its events to what is skipped
// next time, any other batch becomes the new rewind point. r itself is not changed, so that a
// commit that fails leaves it as it was.
func (r rewind) after(from string, rewound bool, keys []string) rewind {
	if from == "" {
		return rewind{} // a first sync is not repeated: it would be a first sync again
	}
	next := rewind{since: from, seen: make(map[string]bool, len(keys))}
	if rewound {
		next.since, next.seen = r.since, maps.Clone(r.seen)
		if next.seen == nil {
			next.seen = make(map[string]bool, len(keys))
		}
	}
	for _, k := range keys {
		next.seen[k] = true
	}
	return next
}

// stored returns the rewind point as it is stored: the token and its keys as a JSON array, or
// two empty strings for none (also when it has more than maxStoredSeen keys).
func (r rewind) stored() (since, seen string, err error) {
	if r.since == "" || len(r.seen) > maxStoredSeen {
		return "", "", nil
	}
	b, err := json.Marshal(slices.Sorted(maps.Keys(r.seen)))
	if err != nil {
		return "", "", err
	}
	return r.since, string(b), nil
}

// loadPosition reads a session's stored sync token and rewind point; both are empty when the
// session has not synced yet.
func loadPosition(ctx context.Context, db *dbutil.Database, session string) (string, rewind, error) {
	var token, prev, seen string
	err := db.QueryRow(ctx, `SELECT next_batch, prev_batch, prev_seen FROM samtal_sync WHERE session = $1`, session).Scan(&token, &prev, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return "", rewind{}, nil
	}
	if err != nil {
		return "", rewind{}, fmt.Errorf("matrix: sync: load sync token: %w", err)
	}
	if prev == "" {
		return token, rewind{}, nil
	}
	var keys []string
	if seen != "" {
		if err := json.Unmarshal([]byte(seen), &keys); err != nil {
			return "", rewind{}, fmt.Errorf("matrix: sync: load rewind point: %w", err)
		}
	}
	back := rewind{since: prev, seen: make(map[string]bool, len(keys))}
	for _, k := range keys {
		back.seen[k] = true
	}
	return token, back, nil
}

// deliveryKey identifies an event for the rewind: its ID, or for an invite without one (servers
// may send those) the room and the inviter.
func deliveryKey(room id.RoomID, raw *event.Event, invite bool) string {
	if raw.ID != "" {
		return string(raw.ID)
	}
	if invite {
		return "invite " + string(room) + " " + string(raw.Sender)
	}
	return ""
}

// toDeviceKey identifies a to-device message for the rewind. Such messages have no ID: the key
// is the sender, the type and a hash of the content (an Olm message's ciphertext is unique, so
// two messages with one key are the same message).
func toDeviceKey(evt *event.Event) string {
	sum := sha256.Sum256(evt.Content.VeryRaw)
	return "to-device " + string(evt.Sender) + " " + evt.Type.Type + " " + base64.RawStdEncoding.EncodeToString(sum[:16])
}

// dropHandedOver takes the to-device messages in skip (handed to the crypto machine by the
// batch a rewind asks for again) out of resp, and returns the keys of those it keeps.
func dropHandedOver(resp *mautrix.RespSync, skip map[string]bool) []string {
	var keys []string
	kept := resp.ToDevice.Events[:0]
	for _, evt := range resp.ToDevice.Events {
		if evt == nil {
			continue
		}
		key := toDeviceKey(evt)
		if skip[key] {
			continue
		}
		keys = append(keys, key)
		kept = append(kept, evt)
	}
	resp.ToDevice.Events = kept
	return keys
}
