package main

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSendReachesNewDevice: every `samtal send` is a new process with the database of the one
// before; a device the officer signed in on between two sends gets the second message's key.
func TestSendReachesNewDevice(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "casebot")
	officer := srv.NewClient(t, "officer", matrixtest.Encrypted())
	room := id.RoomID(mustSamtal(t, "room", "create", "--case", "4711", "--invite", string(officer.UserID())))
	if _, err := officer.Join(t.Context(), string(room)); err != nil {
		t.Fatal(err)
	}
	phone := matrixtest.NewRecorder(t, officer, room)
	mustSamtal(t, "send", string(room), "Ärende 4711 registrerat")
	phone.WaitText(t, "Ärende 4711 registrerat")

	laptop := srv.NewClient(t, "officer", matrixtest.Encrypted())
	if laptop.DeviceID() == officer.DeviceID() {
		t.Fatal("the laptop is the same device")
	}
	onLaptop := matrixtest.NewRecorder(t, laptop, room)
	mustSamtal(t, "send", string(room), "Beslut i ärende 4711")
	if got := onLaptop.WaitText(t, "Beslut i ärende 4711"); !got.Mautrix.WasEncrypted {
		t.Error("the message reached the laptop unencrypted")
	}

	// The status of the room's key names both devices.
	var st struct {
		RoomKey struct {
			SessionID  string `json:"session_id"`
			SharedWith []struct {
				User   id.UserID   `json:"user_id"`
				Device id.DeviceID `json:"device_id"`
			} `json:"shared_with"`
		} `json:"room_key"`
	}
	if err := json.Unmarshal([]byte(mustSamtal(t, "e2ee", "status", "--json", string(room))), &st); err != nil {
		t.Fatal(err)
	}
	shared := map[id.DeviceID]bool{}
	for _, d := range st.RoomKey.SharedWith {
		shared[d.Device] = d.User == officer.UserID()
	}
	if st.RoomKey.SessionID == "" || !shared[officer.DeviceID()] || !shared[laptop.DeviceID()] {
		t.Errorf("e2ee status %s: %+v; want the key shared with both of the officer's devices", room, st.RoomKey)
	}
	if text := mustSamtal(t, "e2ee", "status", string(room)); !strings.Contains(text, "shared with") || !strings.Contains(text, string(laptop.DeviceID())) {
		t.Errorf("e2ee status %s printed:\n%s", room, text)
	}
}
