package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix/matrixtest"
	"maunium.net/go/mautrix/id"
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

// TestE2EEVerify: the person at the terminal compares the emoji with bob's device and answers;
// "y" verifies, anything else cancels.
func TestE2EEVerify(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := loginAs(t, srv, "alice")
	var st struct {
		DeviceID id.DeviceID `json:"device_id"`
	}
	if err := json.Unmarshal([]byte(mustSamtal(t, "e2ee", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	var bobMachine *e2ee.Machine
	bob := srv.NewClient(t, "bob", matrixtest.OnEncrypted(func(m *e2ee.Machine) error {
		bobMachine = m
		return m.EnableVerification(t.Context(), e2ee.VerifyOptions{
			Allow:   func(context.Context, id.UserID) bool { return true },
			Confirm: func(context.Context, e2ee.SAS) bool { return true },
		})
	}))
	matrixtest.NewRecorder(t, bob, "") // bob's Syncer, which receives the verification's messages
	// "--": a device ID may start with "-" (one run failed on -2r124ri taken for a flag).
	out := mustSamtalIn(t, strings.NewReader("y\n"), "e2ee", "verify", "--", string(bob.UserID()), string(bob.DeviceID()))
	if !strings.Contains(out, "Verified") {
		t.Errorf("verify printed %q", out)
	}
	// Bob's side trusts the CLI's device now.
	dev, err := bobMachine.OlmMachine().GetOrFetchDevice(t.Context(), alice, st.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if trust, err := bobMachine.OlmMachine().ResolveTrustContext(t.Context(), dev); err != nil || trust != id.TrustStateVerified {
		t.Errorf("bob trusts alice's CLI device %s, want verified", trust)
	}
	r := samtal(t, strings.NewReader("n\n"), "e2ee", "verify", "--", string(bob.UserID()), string(bob.DeviceID()))
	if r.code == exitOK || !strings.Contains(r.stderr, "cancel") {
		t.Errorf("answering no: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := samtal(t, nil, "e2ee", "verify", "not-a-user"); r.code != exitUsage {
		t.Errorf("bad user: exit %d", r.code)
	}
}
