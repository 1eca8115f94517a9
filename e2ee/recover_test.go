package e2ee_test

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/base58"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/utils"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// newSigningParty is newParty for tests that Bootstrap or Recover: its Machine runs a backup
// uploader, which is stopped before the party's database closes.
func newSigningParty(t *testing.T, srv *matrixtest.Server, localpart string) *party {
	t.Helper()
	p := newParty(t, srv, localpart)
	t.Cleanup(func() { p.m.Close() }) // runs before newParty's cleanup closes the database
	return p
}

// newDevice logs p's user in again, as a new device with a database of its own.
func newDevice(t *testing.T, p *party) *party {
	t.Helper()
	d := &party{t: t, srv: p.srv, dbPath: filepath.Join(t.TempDir(), p.user+"-2.db"), user: p.user, password: p.password, got: &inbox{}}
	d.start(e2ee.Options{PickleKey: testKey})
	t.Cleanup(d.close)
	t.Cleanup(func() { d.m.Close() })
	if d.c.DeviceID() == p.c.DeviceID() {
		t.Fatalf("second login got the same device %s", d.c.DeviceID())
	}
	return d
}

// restart stops p's program and starts it again on the same database.
func restart(p *party) {
	p.t.Helper()
	p.m.Close()
	p.close()
	p.start(e2ee.Options{PickleKey: testKey})
}

func bootstrap(t *testing.T, p *party) string {
	t.Helper()
	rk, err := p.m.Bootstrap(t.Context(), e2ee.PasswordAuth(p.user, p.password), e2ee.BootstrapOptions{})
	if err != nil {
		t.Fatalf("%s: bootstrap: %v", p.user, err)
	}
	return rk
}

func status(t *testing.T, p *party) e2ee.Status {
	t.Helper()
	st, err := p.m.Status(t.Context())
	if err != nil {
		t.Fatalf("%s: status: %v", p.user, err)
	}
	return st
}

// recoveryKeyFormat is the spec's: base58 in groups of four, starting "Es" for the 0x8b01
// prefix.
var recoveryKeyFormat = regexp.MustCompile(`^Es[1-9A-HJ-NP-Za-km-z]{2}( [1-9A-HJ-NP-Za-km-z]{4})+( [1-9A-HJ-NP-Za-km-z]{1,3})?$`)

// TestBootstrap: the first device sets up cross-signing and key backup, gets a recovery key,
// and can still sign after a restart.
func TestBootstrap(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newSigningParty(t, srv, "alice")
	ctx := t.Context()

	before := status(t, alice)
	if before.CrossSigning || before.DeviceSigned || before.CanSign || before.BackupVersion != "" {
		t.Fatalf("status before bootstrap: %+v", before)
	}

	rk := bootstrap(t, alice)
	if !recoveryKeyFormat.MatchString(rk) || len(utils.DecodeBase58RecoveryKey(rk)) != 32 {
		t.Errorf("recovery key %q is not in the spec's format", rk)
	}
	st := status(t, alice)
	if !st.CrossSigning || !st.DeviceSigned || !st.CanSign || st.BackupVersion == "" {
		t.Fatalf("status after bootstrap: %+v", st)
	}
	if st.DeviceID != alice.c.DeviceID() || st.Fingerprint != alice.m.Fingerprint() {
		t.Errorf("status names device %s (%s), want %s (%s)", st.DeviceID, st.Fingerprint, alice.c.DeviceID(), alice.m.Fingerprint())
	}

	// A second bootstrap would replace the keys everyone trusts: only on request.
	if _, err := alice.m.Bootstrap(ctx, e2ee.PasswordAuth(alice.user, alice.password), e2ee.BootstrapOptions{}); !errors.Is(err, e2ee.ErrAlreadyBootstrapped) {
		t.Errorf("second bootstrap: %v, want ErrAlreadyBootstrapped", err)
	}
	// A reset with the wrong password changes nothing.
	_, err := alice.m.Bootstrap(ctx, e2ee.PasswordAuth(alice.user, "not the password"), e2ee.BootstrapOptions{Reset: true})
	if !errors.Is(err, e2ee.ErrAuthRejected) {
		t.Errorf("reset with a wrong password: %v, want ErrAuthRejected", err)
	}
	if after := status(t, alice); after != st {
		t.Errorf("a refused reset changed the status: %+v, was %+v", after, st)
	}

	// The cross-signing keys survive a restart.
	restart(alice)
	if after := status(t, alice); after != st {
		t.Errorf("status after restart: %+v, was %+v", after, st)
	}
	mach := alice.m.OlmMachine()
	if err := mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
		t.Errorf("signing after restart: %v", err)
	}
	// So does the recovery key, which also works on the device that made it.
	if err := alice.m.Recover(ctx, rk); err != nil {
		t.Errorf("recover on the first device: %v", err)
	}

	// A reset makes new keys, a new backup and a new recovery key; the old one stops working.
	rk2, err := alice.m.Bootstrap(ctx, e2ee.PasswordAuth(alice.user, alice.password), e2ee.BootstrapOptions{Reset: true})
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	reset := status(t, alice)
	if rk2 == rk || !reset.DeviceSigned || !reset.CanSign || reset.BackupVersion == st.BackupVersion || reset.BackupVersion == "" {
		t.Errorf("status after reset: %+v, was %+v", reset, st)
	}
	if err := alice.m.Recover(ctx, rk); !errors.Is(err, e2ee.ErrWrongRecoveryKey) {
		t.Errorf("recover with the recovery key from before the reset: %v, want ErrWrongRecoveryKey", err)
	}
	if err := alice.m.Recover(ctx, rk2); err != nil {
		t.Errorf("recover with the new recovery key: %v", err)
	}
}

// history is a conversation alice (on her first device) and bob had before alice's second
// device existed, with alice's keys backed up.
type history struct {
	srv          *matrixtest.Server
	alice, bob   *party
	room         id.RoomID
	recoveryKey  string
	bodies       []string
	aliceBackups id.KeyBackupVersion
}

func newHistory(t *testing.T) *history {
	t.Helper()
	h := &history{srv: matrixtest.NewServer(t)}
	h.alice, h.bob = newSigningParty(t, h.srv, "alice"), newParty(t, h.srv, "bob")
	h.recoveryKey = bootstrap(t, h.alice)
	h.room = encryptedRoom(t, h.alice, h.bob)
	h.bodies = []string{"Ärende 4711 är öppnat", "Jag tar det", "Beslut: bifall", "Tack, noterat"}
	for i, body := range h.bodies {
		from, to := h.alice, h.bob
		if i%2 == 1 {
			from, to = h.bob, h.alice
		}
		send(t, from, h.room, matrix.Text(body))
		to.got.wait(t, body)
	}
	if _, err := h.alice.m.BackupNow(t.Context()); err != nil {
		t.Fatalf("alice: backup: %v", err)
	}
	st := status(t, h.alice)
	if st.NotBackedUp != 0 {
		t.Fatalf("alice has %d room keys not backed up after BackupNow", st.NotBackedUp)
	}
	h.aliceBackups = st.BackupVersion
	return h
}

// readHistory decrypts every message in the room as d sees it, oldest first.
func readHistory(t *testing.T, d *party, room id.RoomID) (bodies []string, failed []error) {
	t.Helper()
	resp, err := d.c.Mautrix().Messages(t.Context(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range slices.Backward(resp.Chunk) {
		if evt.Type != event.EventEncrypted {
			continue
		}
		evt.RoomID = room
		clear, err := d.m.Decrypt(t.Context(), evt)
		if err != nil {
			failed = append(failed, err)
			continue
		}
		bodies = append(bodies, clear.Content.AsMessage().Body)
	}
	return bodies, failed
}

// TestRecoverNewDevice: a new device of alice's, with the recovery key, reads what was said
// before it existed (from the key backup), and it and alice's first device trust each other.
func TestRecoverNewDevice(t *testing.T) {
	h := newHistory(t)
	ctx := t.Context()

	second := newDevice(t, h.alice)
	if st := status(t, second); !st.CrossSigning || st.DeviceSigned || st.CanSign || st.BackupVersion != "" {
		t.Fatalf("new device before recovery: %+v", st)
	}
	if _, failed := readHistory(t, second, h.room); len(failed) == 0 {
		t.Fatal("the new device reads history without any keys")
	}

	if err := second.m.Recover(ctx, h.recoveryKey); err != nil {
		t.Fatalf("recover: %v", err)
	}
	st := status(t, second)
	if !st.DeviceSigned || !st.CanSign || st.BackupVersion != h.aliceBackups || st.NotBackedUp != 0 {
		t.Errorf("new device after recovery: %+v (backup %s expected)", st, h.aliceBackups)
	}
	got, failed := readHistory(t, second, h.room)
	if len(failed) > 0 || !slices.Equal(got, h.bodies) {
		t.Errorf("history on the new device: %q, failures %v; want %q", got, failed, h.bodies)
	}

	// Each device sees the other as cross-signed by alice.
	first := h.alice
	for _, c := range []struct {
		from *party
		sees id.DeviceID
	}{{first, second.c.DeviceID()}, {second, first.c.DeviceID()}} {
		trust := waitTrust(t, c.from, c.sees)
		if trust < id.TrustStateCrossSignedTOFU {
			t.Errorf("%s sees %s with trust %s, want cross-signed", c.from.c.DeviceID(), c.sees, trust)
		}
	}

	// The new device backs up its own keys: what it says is readable by the next device.
	send(t, second, h.room, matrix.Text("Skrivet på den nya enheten"))
	h.bob.got.wait(t, "Skrivet på den nya enheten")
	if _, err := second.m.BackupNow(ctx); err != nil {
		t.Fatal(err)
	}
	third := newDevice(t, second)
	if err := third.m.Recover(ctx, h.recoveryKey); err != nil {
		t.Fatal(err)
	}
	got, failed = readHistory(t, third, h.room)
	if want := append(slices.Clone(h.bodies), "Skrivet på den nya enheten"); len(failed) > 0 || !slices.Equal(got, want) {
		t.Errorf("history on a third device: %q, failures %v; want %q", got, failed, want)
	}
}

// waitTrust returns how p trusts device of its own user once it has read the user's keys
// again, waiting up to half a minute for a cross-signature to show.
func waitTrust(t *testing.T, p *party, device id.DeviceID) id.TrustState {
	t.Helper()
	ctx := t.Context()
	mach := p.m.OlmMachine()
	var trust id.TrustState
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := mach.FetchKeys(ctx, []id.UserID{p.c.UserID()}, true); err != nil {
			t.Fatal(err)
		}
		dev, err := mach.GetOrFetchDevice(ctx, p.c.UserID(), device)
		if err != nil {
			t.Fatal(err)
		}
		if trust, err = mach.ResolveTrustContext(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if trust >= id.TrustStateCrossSignedTOFU {
			t.Logf("%s trusts %s: %s", p.c.DeviceID(), device, trust)
			break
		}
	}
	return trust
}

// TestRecoverBadKeys: a wrong or malformed recovery key is refused and changes nothing; an
// account never set up has nothing to recover.
func TestRecoverBadKeys(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice := newSigningParty(t, srv, "alice")
	rk := bootstrap(t, alice)
	second := newDevice(t, alice)
	before := status(t, second)

	raw := base58.Decode(strings.ReplaceAll(rk, " ", ""))
	raw[34] ^= 0x01 // the parity byte
	wrongParity := base58.Encode(raw)

	for _, c := range []struct{ name, key string }{
		{"another key", randomRecoveryKey(t)},
		{"garbage", "this is not a recovery key"},
		{"empty", ""},
		{"wrong parity", wrongParity},
		{"truncated", rk[:len(rk)-5]},
		{"not base58", "EsT0 OOOO IIII llll" + rk[19:]},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := second.m.Recover(t.Context(), c.key)
			if !errors.Is(err, e2ee.ErrWrongRecoveryKey) {
				t.Errorf("Recover(%q): %v, want ErrWrongRecoveryKey", c.key, err)
			}
			if after := status(t, second); after != before {
				t.Errorf("a refused key changed the status: %+v, was %+v", after, before)
			}
		})
	}

	// Without spaces it is the same key.
	if err := second.m.Recover(t.Context(), strings.ReplaceAll(rk, " ", "")); err != nil {
		t.Errorf("recovery key without spaces: %v", err)
	}

	carol := newSigningParty(t, srv, "carol")
	if err := carol.m.Recover(t.Context(), randomRecoveryKey(t)); !errors.Is(err, e2ee.ErrNotBootstrapped) {
		t.Errorf("recover on an account never set up: %v, want ErrNotBootstrapped", err)
	}
}

func randomRecoveryKey(t *testing.T) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return utils.EncodeBase58RecoveryKey(key)
}
