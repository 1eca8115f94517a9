package e2ee_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestVerification: alice, a member of the bot's admin room, verifies the bot's device by SAS;
// both see the same emojis and numbers, confirm, and from then on each trusts the other's
// device as Verified.
func TestVerification(t *testing.T) {
	srv := matrixtest.NewServer(t)
	board := newSASBoard()
	alice := newVerifyingParty(t, srv, "alice", e2ee.Options{PickleKey: testKey},
		e2ee.VerifyOptions{Confirm: board.confirm("alice", true)})
	admins := &allowLater{}
	bot := newVerifyingParty(t, srv, "bot", e2ee.Options{PickleKey: testKey},
		e2ee.VerifyOptions{Allow: admins.allow, Confirm: board.confirm("bot", true)})
	admins.set(e2ee.AllowMembersOf(bot.c, encryptedRoom(t, alice.party, bot.party)))

	if got := deviceTrust(t, alice.party, bot.party); got != id.TrustStateUnset {
		t.Fatalf("before verification alice trusts the bot's device as %s", got)
	}
	if err := alice.m.Verify(verifyContext(t), bot.c.UserID(), bot.c.DeviceID()); err != nil {
		t.Fatalf("alice's Verify: %v", err)
	}

	a, b := board.seen("alice"), board.seen("bot")
	if len(a.Emojis) != 7 || !slices.Equal(a.Emojis, b.Emojis) || a.Decimals != b.Decimals {
		t.Errorf("alice and the bot were shown different codes:\n alice %s\n bot   %s", a, b)
	}
	for _, d := range a.Decimals {
		if d < 1000 || d > 9191 {
			t.Errorf("decimal %d out of range in %s", d, a)
		}
	}
	for _, e := range a.Emojis {
		if e.Char == "" || e.Name == "" {
			t.Errorf("emoji without a character or name in %s", a)
		}
	}
	if a.With != bot.c.UserID() || a.Device != bot.c.DeviceID() || b.With != alice.c.UserID() || b.Device != alice.c.DeviceID() {
		t.Errorf("SAS parties: alice was shown %s/%s, the bot %s/%s", a.With, a.Device, b.With, b.Device)
	}
	if a.TxnID == "" || a.TxnID != b.TxnID {
		t.Errorf("transaction IDs %q and %q", a.TxnID, b.TxnID)
	}

	if got := deviceTrust(t, alice.party, bot.party); got != id.TrustStateVerified {
		t.Errorf("after verification alice trusts the bot's device as %s, want verified", got)
	}
	awaitTrust(t, bot.party, alice.party, id.TrustStateVerified)
}

// TestVerificationCrossSigned: when both accounts have cross-signing keys (as Element users
// do), a verification also signs the other user's identity, so each trusts the other user, not
// only the one device.
func TestVerificationCrossSigned(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot, _ := verifyingPair(t, srv, true)
	crossSignedVerification(t, alice, bot)
}

// crossSignedVerification bootstraps cross-signing for alice and bot, has alice verify the
// bot's device, and checks that each then trusts the other's identity, not only the device.
func crossSignedVerification(t *testing.T, alice, bot *verifyingParty) {
	t.Helper()
	for _, p := range []*verifyingParty{alice, bot} {
		t.Cleanup(func() { p.m.Close() }) // its backup uploader, before the database closes
		if _, err := p.m.Bootstrap(t.Context(), e2ee.PasswordAuth(p.user, p.password), e2ee.BootstrapOptions{}); err != nil {
			t.Fatalf("%s: bootstrap: %v", p.user, err)
		}
	}
	if err := alice.m.Verify(verifyContext(t), bot.c.UserID(), bot.c.DeviceID()); err != nil {
		t.Fatalf("alice's Verify: %v", err)
	}
	awaitTrust(t, bot.party, alice.party, id.TrustStateVerified)
	for _, c := range []struct{ p, other *verifyingParty }{{alice, bot}, {bot, alice}} {
		matrixtest.Eventually(t, func() error {
			trusted, err := c.p.m.OlmMachine().IsUserTrusted(t.Context(), c.other.c.UserID())
			if err != nil || !trusted {
				return fmt.Errorf("%s does not trust %s's identity after the verification (%v)", c.p.user, c.other.user, err)
			}
			return nil
		})
	}
}

// TestVerificationOtherConfirmsFirst: between two cross-signed users, the side that confirms
// the SAS last has the other's MAC already when it confirms. mautrix's helper then checked the
// other user's identity against its own master key and cancelled ("master keys do not match",
// a flake of TestVerificationCrossSigned whenever the bot's confirmation came last); the
// verifier holds their MAC until it has confirmed. Each side in turn confirms a second after
// the other.
func TestVerificationOtherConfirmsFirst(t *testing.T) {
	for _, last := range []string{"bot", "alice"} {
		t.Run(last+" last", func(t *testing.T) {
			srv := matrixtest.NewServer(t)
			board := newSASBoard()
			first := make(chan struct{})
			var lastM atomic.Pointer[e2ee.Machine] // the machine of the side that confirms last
			confirm := func(who string) func(context.Context, e2ee.SAS) bool {
				answer := board.confirm(who, true)
				return func(ctx context.Context, s e2ee.SAS) bool {
					if who != last {
						defer close(first)
						return answer(ctx, s)
					}
					ok := answer(ctx, s)
					select {
					case <-first: // the other side has confirmed and sent its MAC
					case <-ctx.Done():
						return false
					}
					// Until its MAC has arrived here (and was held), or a while: before the
					// fix nothing was held, and the MAC reached the helper first.
					for deadline := time.Now().Add(3 * time.Second); e2ee.HeldVerificationEvents(lastM.Load()) == 0 && time.Now().Before(deadline); {
						time.Sleep(20 * time.Millisecond)
					}
					return ok
				}
			}
			alice := newVerifyingParty(t, srv, "alice", e2ee.Options{PickleKey: testKey}, e2ee.VerifyOptions{Confirm: confirm("alice")})
			bot := newVerifyingParty(t, srv, "bot", e2ee.Options{PickleKey: testKey},
				e2ee.VerifyOptions{Allow: onlyUser(alice.c.UserID()), Confirm: confirm("bot")})
			lastM.Store(map[string]*e2ee.Machine{"alice": alice.m, "bot": bot.m}[last])
			crossSignedVerification(t, alice, bot)
			if n := e2ee.HeldVerificationEvents(lastM.Load()); n == 0 {
				t.Errorf("%s confirmed last but held none of the other side's events: the case under test did not occur", last)
			}
		})
	}
}

// TestVerificationInRoom: as Element verifies another user, alice asks the bot in an encrypted
// room they share; the verification events travel through the room, encrypted.
func TestVerificationInRoom(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot, board := verifyingPair(t, srv, true)
	room := encryptedRoom(t, alice.party, bot.party)
	send(t, alice.party, room, matrix.Text("hej"))
	bot.got.wait(t, "hej")

	if err := alice.m.VerifyInRoom(verifyContext(t), room, bot.c.UserID()); err != nil {
		t.Fatalf("alice's VerifyInRoom: %v", err)
	}
	if a, b := board.seen("alice"), board.seen("bot"); len(a.Emojis) != 7 || !slices.Equal(a.Emojis, b.Emojis) || a.Device != bot.c.DeviceID() {
		t.Errorf("alice was shown %s for %s, the bot %s", a, a.Device, b)
	}
	if got := deviceTrust(t, alice.party, bot.party); got != id.TrustStateVerified {
		t.Errorf("alice trusts the bot's device as %s, want verified", got)
	}
	awaitTrust(t, bot.party, alice.party, id.TrustStateVerified)
}

// TestVerificationNotAllowed: someone the bot's policy does not admit asks to verify it; the
// bot cancels, and nobody's trust changes.
func TestVerificationNotAllowed(t *testing.T) {
	srv := matrixtest.NewServer(t)
	var shown atomic.Int32
	never := func(context.Context, e2ee.SAS) bool { shown.Add(1); return true }
	mallory := newVerifyingParty(t, srv, "mallory", e2ee.Options{PickleKey: testKey}, e2ee.VerifyOptions{Confirm: never})
	admins := &allowLater{}
	bot := newVerifyingParty(t, srv, "bot", e2ee.Options{PickleKey: testKey},
		e2ee.VerifyOptions{Allow: admins.allow, Confirm: never})
	adminRoom, err := bot.c.CreateRoom(t.Context(), matrix.RoomSpec{Name: "admins"})
	if err != nil {
		t.Fatal(err)
	}
	admins.set(e2ee.AllowMembersOf(bot.c, adminRoom))

	err = mallory.m.Verify(verifyContext(t), bot.c.UserID(), "")
	var cancelled *e2ee.CancelledError
	if !errors.Is(err, e2ee.ErrVerificationCancelled) || !errors.As(err, &cancelled) {
		t.Fatalf("mallory's Verify: %v, want a cancellation", err)
	}
	if cancelled.Code != event.VerificationCancelCodeUser || !strings.Contains(cancelled.Reason, "not allowed") || cancelled.With != bot.c.UserID() {
		t.Errorf("cancellation %+v, want %s: not allowed", cancelled, event.VerificationCancelCodeUser)
	}
	if !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("error %q does not say it was cancelled", err)
	}
	if n := shown.Load(); n != 0 {
		t.Errorf("a SAS was shown %d times", n)
	}
	if got := deviceTrust(t, mallory.party, bot.party); got != id.TrustStateUnset {
		t.Errorf("mallory trusts the bot's device as %s", got)
	}
	if got := deviceTrust(t, bot.party, mallory.party); got != id.TrustStateUnset {
		t.Errorf("the bot trusts mallory's device as %s", got)
	}
}

// TestVerificationMismatch: the bot's operator says the codes differ; the verification is
// cancelled as a mismatch and nobody's trust changes.
func TestVerificationMismatch(t *testing.T) {
	srv := matrixtest.NewServer(t)
	alice, bot, _ := verifyingPair(t, srv, false)

	err := alice.m.Verify(verifyContext(t), bot.c.UserID(), bot.c.DeviceID())
	var cancelled *e2ee.CancelledError
	if !errors.As(err, &cancelled) || cancelled.Code != event.VerificationCancelCodeSASMismatch {
		t.Fatalf("alice's Verify: %v, want a cancellation %s", err, event.VerificationCancelCodeSASMismatch)
	}
	if got := deviceTrust(t, alice.party, bot.party); got != id.TrustStateUnset {
		t.Errorf("alice trusts the bot's device as %s", got)
	}
	if got := deviceTrust(t, bot.party, alice.party); got != id.TrustStateUnset {
		t.Errorf("the bot trusts alice's device as %s", got)
	}
}

// verifyingParty is a party that can verify and be verified, with its Syncer at hand for its
// counters.
type verifyingParty struct {
	*party
	syncer *matrix.Syncer
}

// newVerifyingParty registers localpart and starts an encrypted client with verification
// enabled (which comes before its Syncer runs).
func newVerifyingParty(t *testing.T, srv *matrixtest.Server, localpart string, opts e2ee.Options, vopts e2ee.VerifyOptions) *verifyingParty {
	t.Helper()
	ctx := context.Background()
	_, pw := srv.RegisterUser(t, localpart)
	p := &party{t: t, srv: srv, dbPath: filepath.Join(t.TempDir(), localpart+".db"), user: localpart, password: pw, got: &inbox{}}
	db, err := matrix.OpenDatabase(ctx, p.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := matrix.New(ctx, matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password(localpart, pw), DB: db, Logger: logger(t)})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	p.db, p.c = db, c
	t.Cleanup(p.close)
	if p.m, err = e2ee.Enable(ctx, c, opts); err != nil {
		t.Fatalf("%s: %v", localpart, err)
	}
	if err := p.m.EnableVerification(ctx, vopts); err != nil {
		t.Fatalf("%s: %v", localpart, err)
	}
	s := c.NewSyncer(matrix.SyncOptions{Timeout: 2 * time.Second, AutoJoin: &matrix.AutoJoinPolicy{Servers: []string{srv.ServerName}}})
	s.OnMessage(func(ctx context.Context, evt *matrix.Event) error { p.got.add(evt); return nil })
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(runCtx) }()
	p.stop = func() { cancel(); <-done }
	return &verifyingParty{party: p, syncer: s}
}

// allowLater is a VerifyOptions.Allow that is set once the party it needs exists.
type allowLater struct {
	f atomic.Pointer[func(context.Context, id.UserID) bool]
}

func (a *allowLater) set(f func(context.Context, id.UserID) bool) { a.f.Store(&f) }

func (a *allowLater) allow(ctx context.Context, user id.UserID) bool {
	f := a.f.Load()
	return f != nil && (*f)(ctx, user)
}

func onlyUser(u id.UserID) func(context.Context, id.UserID) bool {
	return func(_ context.Context, user id.UserID) bool { return user == u }
}

func verifyContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sasBoard lets the Confirm callbacks of two parties compare their SAS, as two people do by
// looking at both screens.
type sasBoard struct {
	mu    sync.Mutex
	shown map[string]e2ee.SAS
	both  chan struct{} // closed once both were shown one
}

func newSASBoard() *sasBoard {
	return &sasBoard{shown: map[string]e2ee.SAS{}, both: make(chan struct{})}
}

// confirm is who's Confirm: it waits for the other side's SAS and answers whether the two
// match, and answer.
func (b *sasBoard) confirm(who string, answer bool) func(context.Context, e2ee.SAS) bool {
	return func(ctx context.Context, s e2ee.SAS) bool {
		b.mu.Lock()
		b.shown[who] = s
		if len(b.shown) == 2 {
			close(b.both)
		}
		b.mu.Unlock()
		select {
		case <-b.both:
		case <-ctx.Done():
			return false
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for other, o := range b.shown {
			if other != who {
				return answer && slices.Equal(o.Emojis, s.Emojis) && o.Decimals == s.Decimals
			}
		}
		return false
	}
}

func (b *sasBoard) seen(who string) e2ee.SAS {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.shown[who]
}

// deviceTrust is how far p trusts other's device.
func deviceTrust(t testing.TB, p, other *party) id.TrustState {
	t.Helper()
	mach := p.m.OlmMachine()
	dev, err := mach.GetOrFetchDevice(t.Context(), other.c.UserID(), other.c.DeviceID())
	if err != nil {
		t.Fatalf("%s: %s's device: %v", p.user, other.user, err)
	}
	state, err := mach.ResolveTrustContext(t.Context(), dev)
	if err != nil {
		t.Fatalf("%s: trust in %s's device: %v", p.user, other.user, err)
	}
	return state
}

// awaitTrust waits until p trusts other's device as want: the last steps of a verification
// reach the two sides at different times.
func awaitTrust(t testing.TB, p, other *party, want id.TrustState) {
	t.Helper()
	matrixtest.Eventually(t, func() error {
		if got := deviceTrust(t, p, other); got != want {
			return fmt.Errorf("%s trusts %s's device as %s, want %s", p.user, other.user, got, want)
		}
		return nil
	})
}

// verifyingPair starts alice and a bot that lets only alice verify it; both compare the SAS
// on one board, and the bot answers botConfirms.
func verifyingPair(t *testing.T, srv *matrixtest.Server, botConfirms bool) (alice, bot *verifyingParty, board *sasBoard) {
	t.Helper()
	board = newSASBoard()
	alice = newVerifyingParty(t, srv, "alice", e2ee.Options{PickleKey: testKey},
		e2ee.VerifyOptions{Confirm: board.confirm("alice", true)})
	bot = newVerifyingParty(t, srv, "bot", e2ee.Options{PickleKey: testKey},
		e2ee.VerifyOptions{Allow: onlyUser(alice.c.UserID()), Confirm: board.confirm("bot", botConfirms)})
	return alice, bot, board
}
