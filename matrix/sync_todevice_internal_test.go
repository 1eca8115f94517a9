package matrix

import (
	"encoding/json"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestDropHandedOver: a rewind leaves out the to-device messages its batch handed over, by
// sender, type and content, keeps the others (new since, or another message of the same
// sender), and returns the keys of those it keeps, which a rewind point stores and loads.
func TestDropHandedOver(t *testing.T) {
	toDevice := func(sender, typ, content string) *event.Event {
		evt := &event.Event{}
		if err := json.Unmarshal([]byte(`{"sender":"`+sender+`","type":"`+typ+`","content":`+content+`}`), evt); err != nil {
			t.Fatal(err)
		}
		return evt
	}
	a := toDevice("@alice:hs", "m.room.encrypted", `{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"one"}}}`)
	b := toDevice("@alice:hs", "m.room.encrypted", `{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":1,"body":"two"}}}`)
	c := toDevice("@bob:hs", "m.room.encrypted", `{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"one"}}}`)

	first := &mautrix.RespSync{}
	first.ToDevice.Events = []*event.Event{a, nil}
	keys := dropHandedOver(first, nil)
	if len(first.ToDevice.Events) != 1 || len(keys) != 1 {
		t.Fatalf("with nothing to skip: kept %d messages and %d keys, want 1 and 1", len(first.ToDevice.Events), len(keys))
	}

	// What a rewind point stored after that batch, loaded again.
	since, seen, err := rewind{}.after("s1", false, append([]string{"$event"}, keys...)).stored()
	if err != nil {
		t.Fatal(err)
	}
	back := rewind{since: since, seen: map[string]bool{}}
	var stored []string
	if err := json.Unmarshal([]byte(seen), &stored); err != nil {
		t.Fatal(err)
	}
	for _, k := range stored {
		back.seen[k] = true
	}

	again := &mautrix.RespSync{}
	again.ToDevice.Events = []*event.Event{a, b, c}
	_, skip := back.from("s2", true)
	keys = dropHandedOver(again, skip)
	if !slices.Equal(again.ToDevice.Events, []*event.Event{b, c}) {
		t.Errorf("on the rewind, kept %v, want the two messages not handed over", again.ToDevice.Events)
	}
	if len(keys) != 2 || slices.Contains(keys, toDeviceKey(a)) || keys[0] == keys[1] {
		t.Errorf("keys of the kept messages: %q", keys)
	}
}
