package matrix

import (
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// rewind is where a Syncer asks again after a failed sync: the token its last committed batch
// was requested with, and the events handed out since that token, which are not handed out
// twice.
//
// A homeserver that is going down can answer the sync in progress with less than it has: Dendrite
// (0.13.8) cut short by SIGTERM answers it with the room timelines it could not read left out and
// a next_batch past them, and its later syncs never show those events. The answer just before a
// failed sync is therefore not trusted: once the server is back, the Syncer syncs again from the
// token before it, which any server answers in full.
type rewind struct {
	since string          // "" when there is no batch to go back over (none yet, or the first sync)
	seen  map[string]bool // deliveryKey of each event handed out since since
}

// from returns the token to sync from and the events to skip: since itself and nothing when
// no rewind is due.
func (r *rewind) from(since string, due bool) (string, map[string]bool) {
	if !due || r.since == "" {
		return since, nil
	}
	return r.since, r.seen
}

// committed records a batch committed after a sync from token from, whose events have the
// given keys: a batch from the rewind point adds its events to what is skipped next time, any
// other batch becomes the new rewind point.
func (r *rewind) committed(from string, rewound bool, keys []string) {
	if !rewound {
		r.since, r.seen = from, make(map[string]bool, len(keys))
	}
	if from == "" {
		r.since, r.seen = "", nil // a first sync is not repeated: it would be a first sync again
		return
	}
	for _, k := range keys {
		r.seen[k] = true
	}
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
