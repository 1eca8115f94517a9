package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
	"maunium.net/go/mautrix/id"
)

// runE2EE runs `samtal e2ee status|bootstrap|recover|verify`.
func runE2EE(ctx context.Context, e *env, args []string) error {
	subs := map[string]func(context.Context, *env, []string) error{
		"status":    runE2EEStatus,
		"bootstrap": runE2EEBootstrap,
		"recover":   runE2EERecover,
		"verify":    runE2EEVerify,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stderr, `Usage:
  samtal e2ee status [--json] [ROOM]   this device's keys, cross-signing and key backup; with a
                                       room, whom its current room key went to and whom not
  samtal e2ee bootstrap [--reset]      set up cross-signing, secret storage and key backup;
                                       prints the recovery key once (needs SAMTAL_PASSWORD)
  samtal e2ee recover                  trust this new device and restore the key backup with
                                       the recovery key (SAMTAL_RECOVERY_KEY or standard input)
  samtal e2ee verify USER [DEVICE]     verify another user's device by comparing emoji

The device's keys are kept in the database, encrypted with the pickle key (--pickle-key).
`)
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub, ok := subs[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown subcommand %q (status, bootstrap, recover, verify)", errUsage, args[0])
	}
	return sub(ctx, e, args[1:])
}

// openE2EE opens the account with encryption, which these commands cannot do without.
func openE2EE(ctx context.Context, e *env, acct *account) (func(), error) {
	if acct.noE2EE {
		return nil, fmt.Errorf("%w: --no-e2ee makes no sense here", errUsage)
	}
	_, done, err := acct.open(ctx, e)
	if err != nil {
		return nil, err
	}
	if acct.m == nil {
		done()
		return nil, fmt.Errorf("%w: encryption is off: name a pickle key file with --pickle-key or SAMTAL_PICKLE_KEY_FILE", errUsage)
	}
	return done, nil
}

func runE2EEStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "e2ee status")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	setUsage(fs, "e2ee status [flags] [ROOM]", "Prints this device's keys and fingerprint, whether the account is cross-signed and this device\nverified, and the state of the server-side key backup. With ROOM (an ID or alias), also the\nroom's current room key: when it started, the devices it was shared with, and those it was\nwithheld from with the reason (\"why can't the officer read this?\").\n\n"+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, rest[1:])
	}
	done, err := openE2EE(ctx, e, acct)
	if err != nil {
		return err
	}
	defer done()
	st, err := acct.m.Status(ctx)
	if err != nil {
		return err
	}
	var key *e2ee.RoomKey
	if len(rest) == 1 {
		rooms, err := resolveRooms(ctx, acct.m.Client(), rest)
		if err != nil {
			return err
		}
		rk, err := acct.m.RoomKeyStatus(ctx, rooms[0])
		if err != nil {
			return err
		}
		key = &rk
	}
	if *asJSON {
		out := map[string]any{
			"device_id": st.DeviceID, "fingerprint": st.Fingerprint, "cross_signing": st.CrossSigning,
			"device_signed": st.DeviceSigned, "can_sign": st.CanSign, "backup_version": st.BackupVersion,
			"not_backed_up": st.NotBackedUp,
		}
		if key != nil {
			out["room_key"] = roomKeyJSON(*key)
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	fmt.Fprintf(e.stdout, "device        %s\nfingerprint   %s\ncross-signing %v\ndevice signed %v\ncan sign      %v\nkey backup    %s\nnot backed up %d\n",
		st.DeviceID, st.Fingerprint, st.CrossSigning, st.DeviceSigned, st.CanSign, orNone(string(st.BackupVersion)), st.NotBackedUp)
	if key != nil {
		if key.SessionID == "" {
			fmt.Fprintf(e.stdout, "room key      none yet in %s: the next message starts one\n", key.Room)
		} else {
			fmt.Fprintf(e.stdout, "room key      %s in %s, started %s, %d messages\n", key.SessionID, key.Room, key.Started.Format(time.RFC3339), key.Messages)
		}
		for _, d := range key.SharedWith {
			fmt.Fprintf(e.stdout, "  shared with   %s %s (%s)\n", d.User, d.Device, d.Trust)
		}
		for _, d := range key.WithheldFrom {
			fmt.Fprintf(e.stdout, "  not shared    %s %s: %s\n", d.User, orNone(string(d.Device)), d.Reason)
		}
	}
	return nil
}

// roomKeyJSON is a RoomKey as `e2ee status --json` prints it.
func roomKeyJSON(k e2ee.RoomKey) map[string]any {
	devices := func(ds []e2ee.DeviceShare) []map[string]any {
		out := []map[string]any{}
		for _, d := range ds {
			m := map[string]any{"user_id": d.User, "device_id": d.Device, "trust": d.Trust.String()}
			if d.Reason != "" {
				m["reason"] = d.Reason
			}
			out = append(out, m)
		}
		return out
	}
	out := map[string]any{"room_id": k.Room, "session_id": k.SessionID, "messages": k.Messages,
		"shared_with": devices(k.SharedWith), "withheld_from": devices(k.WithheldFrom)}
	if !k.Started.IsZero() {
		out["started"] = k.Started.UTC().Format(time.RFC3339)
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func runE2EEBootstrap(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "e2ee bootstrap")
	acct := accountFlags(fs)
	setUsage(fs, "e2ee bootstrap [flags]", "Sets up cross-signing, secret storage and a server-side key backup for the account, and\nprints the recovery key once: keep it safe, since it is what a new device needs (samtal\ne2ee recover). The homeserver asks for the account's password: set SAMTAL_PASSWORD.")
	reset := fs.Bool("reset", false, "replace cross-signing keys, secret storage and backup the account already has")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	password := os.Getenv("SAMTAL_PASSWORD")
	if password == "" {
		return fmt.Errorf("%w: bootstrap asks the homeserver for the account's password: set SAMTAL_PASSWORD", errAuth)
	}
	done, err := openE2EE(ctx, e, acct)
	if err != nil {
		return err
	}
	defer done()
	user := acct.m.Client().UserID()
	key, err := acct.m.Bootstrap(ctx, e2ee.PasswordAuth(string(user), password), e2ee.BootstrapOptions{Reset: *reset})
	if errors.Is(err, e2ee.ErrAlreadyBootstrapped) {
		return fmt.Errorf("%w; use 'samtal e2ee recover' on a new device, or --reset to start over", err)
	}
	if errors.Is(err, e2ee.ErrAuthRejected) {
		return fmt.Errorf("%w: %w", errAuth, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "Cross-signing and key backup are set up for %s. Keep the recovery key below somewhere safe:\n"+
		"it is shown only now, and a new device needs it to read the history.\n", user)
	fmt.Fprintln(e.stdout, key)
	return nil
}

func runE2EERecover(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "e2ee recover")
	acct := accountFlags(fs)
	setUsage(fs, "e2ee recover [flags]", "Makes this new device trusted (cross-signed) and restores the key backup, so that it reads\nwhat was said before it existed, with the recovery key from SAMTAL_RECOVERY_KEY or\nstandard input.")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	key := os.Getenv("SAMTAL_RECOVERY_KEY")
	if key == "" && e.stdin != nil {
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("%w: give the recovery key on standard input or in SAMTAL_RECOVERY_KEY", errUsage)
		}
		key = strings.TrimSpace(line)
	}
	if key == "" {
		return fmt.Errorf("%w: give the recovery key on standard input or in SAMTAL_RECOVERY_KEY (never as an argument)", errUsage)
	}
	done, err := openE2EE(ctx, e, acct)
	if err != nil {
		return err
	}
	defer done()
	if err := acct.m.Recover(ctx, key); err != nil {
		if errors.Is(err, e2ee.ErrWrongRecoveryKey) {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "Device %s is cross-signed and restored the key backup.\n", acct.m.Client().DeviceID())
	return nil
}

// runE2EEVerify verifies another user's device from the command line: the emoji and numbers
// are printed, and the person at the terminal answers whether the other device shows the same.
func runE2EEVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "e2ee verify")
	acct := accountFlags(fs)
	setUsage(fs, "e2ee verify [flags] USER [DEVICE]", "Asks USER (@localpart:server) to verify a device (DEVICE, else the user's devices) by\ncomparing emoji: accept the request on that device, compare the emoji printed here with\nthe ones it shows, and answer whether they match.")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) < 1 || len(rest) > 2 {
		return fmt.Errorf("%w: want USER [DEVICE]", errUsage)
	}
	user := id.UserID(rest[0])
	if err := matrix.ValidateUserID(user); err != nil {
		return err
	}
	var device id.DeviceID
	if len(rest) == 2 {
		device = id.DeviceID(rest[1])
	}
	done, err := openE2EE(ctx, e, acct)
	if err != nil {
		return err
	}
	defer done()
	answers := bufio.NewReader(e.stdin)
	err = acct.m.EnableVerification(ctx, e2ee.VerifyOptions{
		Allow: func(_ context.Context, u id.UserID) bool { return u == user },
		Confirm: func(_ context.Context, sas e2ee.SAS) bool {
			fmt.Fprintf(e.stderr, "Compare with what %s (device %s) shows:\n  %s\nDo they match? [y/N] ", sas.With, sas.Device, sas)
			line, _ := answers.ReadString('\n')
			return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
		},
	})
	if err != nil {
		return err
	}
	// The verification's messages arrive through sync.
	syncCtx, stopSync := context.WithCancel(ctx)
	defer stopSync()
	s := acct.m.Client().NewSyncer(matrix.SyncOptions{Timeout: 5 * time.Second})
	go func() { _ = s.Run(syncCtx) }()
	fmt.Fprintf(e.stderr, "Asking %s to verify; accept the request on their device.\n", user)
	if err := acct.m.Verify(ctx, user, device); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Verified %s.\n", user)
	return nil
}
