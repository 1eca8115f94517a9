package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestE2EECommands: bootstrap prints a recovery key; a second device (another database)
// recovers with it and is cross-signed; a wrong key is bad input; status reports both.
func TestE2EECommands(t *testing.T) {
	srv := matrixtest.NewServer(t)
	loginAs(t, srv, "alice")

	var st struct {
		DeviceID     string `json:"device_id"`
		CrossSigning bool   `json:"cross_signing"`
		DeviceSigned bool   `json:"device_signed"`
		Backup       string `json:"backup_version"`
	}
	if err := json.Unmarshal([]byte(mustSamtal(t, "e2ee", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.DeviceID == "" || st.CrossSigning {
		t.Fatalf("status before bootstrap: %+v", st)
	}
	key := mustSamtal(t, "e2ee", "bootstrap")
	if !regexp.MustCompile(`^E[a-km-zA-HJ-NP-Z1-9]{3}( [a-km-zA-HJ-NP-Z1-9]{4}){11}$`).MatchString(key) {
		t.Fatalf("bootstrap printed %q, want a recovery key", key)
	}
	if r := samtal(t, nil, "e2ee", "bootstrap"); r.code != exitFail || !strings.Contains(r.stderr, "recover") {
		t.Errorf("second bootstrap: exit %d, %s", r.code, r.stderr)
	}

	// A new device: another database, the same account.
	t.Setenv("SAMTAL_DB", filepath.Join(t.TempDir(), "second.db"))
	t.Setenv("SAMTAL_HOMESERVER", srv.URL)
	if r := samtal(t, strings.NewReader("EsTc LW2K PGiF wKEA 3As5 g5dp WJ8V AtdF AsTs 8h5U 3N7E bZmb\n"), "e2ee", "recover"); r.code != exitUsage {
		t.Errorf("wrong recovery key: exit %d, %s", r.code, r.stderr)
	}
	if r := samtal(t, strings.NewReader(""), "e2ee", "recover"); r.code != exitUsage {
		t.Errorf("no recovery key: exit %d, %s", r.code, r.stderr)
	}
	out := mustSamtalIn(t, strings.NewReader(key+"\n"), "e2ee", "recover")
	if !strings.Contains(out, "cross-signed") {
		t.Errorf("recover printed %q", out)
	}
	if err := json.Unmarshal([]byte(mustSamtal(t, "e2ee", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.CrossSigning || !st.DeviceSigned || st.Backup == "" {
		t.Errorf("status after recover: %+v", st)
	}
	if r := samtal(t, nil, "e2ee", "status", "--no-e2ee"); r.code != exitUsage {
		t.Errorf("status --no-e2ee: exit %d", r.code)
	}
}
