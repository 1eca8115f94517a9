package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// runRoom runs `samtal room create|ensure|join|invite`.
func runRoom(ctx context.Context, e *env, args []string) error {
	subs := map[string]func(context.Context, *env, []string) error{
		"create": runRoomCreate,
		"ensure": runRoomEnsure,
		"join":   runRoomJoin,
		"invite": runRoomInvite,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stderr, `Usage:
  samtal room create [flags]          create a room and print its ID
  samtal room ensure ALIAS [flags]    print the room ALIAS points at, creating it if there is none
                                      (the alias is the argument; --alias is for create only)
  samtal room join ROOM [flags]       join a room (or accept its invite) and print its ID
  samtal room invite ROOM USER...     invite people to a room

Run 'samtal room SUBCOMMAND -h' for its flags.
`)
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub, ok := subs[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown subcommand %q (create, ensure, join, invite)", errUsage, args[0])
	}
	return sub(ctx, e, args[1:])
}

// roomResult is what create, ensure and join print.
type roomResult struct {
	RoomID  id.RoomID    `json:"room_id"`
	Alias   id.RoomAlias `json:"alias,omitempty"`
	Created *bool        `json:"created,omitempty"` // ensure only
}

func printRoom(w io.Writer, asJSON bool, r roomResult) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	line := string(r.RoomID)
	if r.Created != nil {
		line += "\t" + map[bool]string{true: "created", false: "existed"}[*r.Created]
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func runRoomCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "room create")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rf := addRoomFlags(fs)
	setUsage(fs, "room create [flags]", "Creates a room and prints its ID.\n\n"+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	spec, err := rf.spec()
	if err != nil {
		return err
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	room, err := c.CreateRoom(ctx, spec)
	if err != nil {
		return err
	}
	r := roomResult{RoomID: room}
	if spec.Alias != "" {
		r.Alias = id.NewRoomAlias(spec.Alias, c.UserID().Homeserver())
	}
	return printRoom(e.stdout, *asJSON, r)
}

func runRoomEnsure(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "room ensure")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rf := addRoomFlags(fs)
	setUsage(fs, "room ensure ALIAS [flags]", `Prints the ID of the room ALIAS (#localpart:server, on the account's own server) points at,
and whether it was created now or existed: the room is created as the flags describe when
the alias points nowhere, exactly once even when several processes ask at the same time.
The flags are used only when the room is created.

`+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: want one ALIAS, got %d arguments", errUsage, len(rest))
	}
	alias := id.RoomAlias(rest[0])
	if err := matrix.ValidateAlias(alias); err != nil {
		return err
	}
	if rf.alias != "" {
		return fmt.Errorf("%w: room ensure takes the alias as its argument only; --alias is for room create", errUsage)
	}
	spec, err := rf.spec()
	if err != nil {
		return err
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	room, created, err := c.EnsureRoom(ctx, alias, spec)
	if err != nil {
		if room != "" {
			// The room exists and the alias points at it; a step after creating it failed.
			return fmt.Errorf("room %s for %s: %w", room, alias, err)
		}
		return err
	}
	return printRoom(e.stdout, *asJSON, roomResult{RoomID: room, Alias: alias, Created: &created})
}

func runRoomJoin(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "room join")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	setUsage(fs, "room join ROOM [flags]", "Joins ROOM, a room ID (!...) or alias (#...), or accepts its invite, and prints its ID.\n\n"+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: want one ROOM, got %d arguments", errUsage, len(rest))
	}
	if err := checkRoomArg(rest[0]); err != nil {
		return err
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	room, err := c.Join(ctx, rest[0])
	if err != nil {
		return err
	}
	r := roomResult{RoomID: room}
	if strings.HasPrefix(rest[0], "#") {
		r.Alias = id.RoomAlias(rest[0])
	}
	return printRoom(e.stdout, *asJSON, r)
}

func runRoomInvite(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "room invite")
	acct := accountFlags(fs)
	setUsage(fs, "room invite ROOM USER... [flags]", "Invites each USER (@localpart:server) to ROOM, a room ID or alias.\n\n"+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) < 2 {
		return fmt.Errorf("%w: want ROOM and at least one USER", errUsage)
	}
	if err := checkRoomArg(rest[0]); err != nil {
		return err
	}
	var users []id.UserID
	for _, u := range rest[1:] {
		if err := matrix.ValidateUserID(id.UserID(u)); err != nil {
			return err
		}
		users = append(users, id.UserID(u))
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	rooms, err := resolveRooms(ctx, c, rest[:1])
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := c.Invite(ctx, rooms[0], u); err != nil {
			return err
		}
	}
	return nil
}

// roomFlags describe a room to create.
type roomFlags struct {
	preset, name, topic, alias, caseID string
	invite                             stringList
	unencrypted                        bool
}

// addRoomFlags registers the flags of `room create` and `room ensure`.
func addRoomFlags(fs *flag.FlagSet) *roomFlags {
	f := &roomFlags{}
	fs.StringVar(&f.preset, "preset", "", "kind of room: private, public, direct or case (default private, or case with --case)")
	fs.StringVar(&f.name, "name", "", "the room's name")
	fs.StringVar(&f.topic, "topic", "", "the room's topic")
	fs.StringVar(&f.alias, "alias", "", "`LOCALPART` of an alias on the account's server, such as case-4711")
	fs.Var(&f.invite, "invite", "`USER` to invite, such as @anna:agency.example; repeat for several")
	fs.StringVar(&f.caseID, "case", "", "`ID` of the case the room is about (implies --preset case)")
	fs.BoolVar(&f.unencrypted, "unencrypted", false, "create the room without the end-to-end encryption every preset but public has")
	return f
}

// spec turns the flags into a RoomSpec.
func (f *roomFlags) spec() (matrix.RoomSpec, error) {
	spec := matrix.RoomSpec{Name: f.name, Topic: f.topic, Alias: f.alias, CaseID: f.caseID}
	preset := f.preset
	if preset == "" && f.caseID != "" {
		preset = "case"
	}
	switch preset {
	case "", "private":
		spec.Preset = matrix.PrivateChat
	case "public":
		spec.Preset = matrix.PublicRoom
	case "direct":
		spec.Preset = matrix.DirectChat
	case "case":
		spec.Preset = matrix.CaseRoom
		if strings.TrimSpace(f.caseID) == "" {
			return spec, fmt.Errorf("%w: --preset case needs --case ID", errUsage)
		}
	default:
		return spec, fmt.Errorf("%w: --preset %q: want private, public, direct or case", errUsage, f.preset)
	}
	for _, u := range f.invite {
		if err := matrix.ValidateUserID(id.UserID(u)); err != nil {
			return spec, err
		}
		spec.Invite = append(spec.Invite, id.UserID(u))
	}
	if f.unencrypted {
		spec.Encrypted = new(false)
	}
	return spec, nil
}

// checkRoomArg checks that s is syntactically a room ID or alias, before any request.
func checkRoomArg(s string) error {
	switch {
	case strings.HasPrefix(s, "!"):
		return matrix.ValidateRoomID(id.RoomID(s))
	case strings.HasPrefix(s, "#"):
		return matrix.ValidateAlias(id.RoomAlias(s))
	}
	return fmt.Errorf("%w: %q is neither a room ID (!...) nor an alias (#...)", matrix.ErrInvalidRoom, s)
}

// resolveRooms turns room IDs and aliases into the IDs of rooms the account is in. An unknown
// alias, or a room the account is not in, is an error matching matrix.ErrNotFound: the server
// would refuse to act in it anyway, and saying so before anything is queued is clearer.
func resolveRooms(ctx context.Context, c *matrix.Client, args []string) ([]id.RoomID, error) {
	if len(args) == 0 {
		return nil, nil
	}
	joined, err := c.Mautrix().JoinedRooms(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the account's rooms: %w", err)
	}
	var rooms []id.RoomID
	for _, arg := range args {
		room := id.RoomID(arg)
		if strings.HasPrefix(arg, "#") {
			room, err = c.ResolveAlias(ctx, id.RoomAlias(arg))
			if errors.Is(err, matrix.ErrNotFound) {
				return nil, fmt.Errorf("no room has the alias %s: %w", arg, err)
			}
			if err != nil {
				return nil, err
			}
		}
		if !slices.Contains(joined.JoinedRooms, room) {
			return nil, fmt.Errorf("%w: %s is not a room %s is in", matrix.ErrNotFound, arg, c.UserID())
		}
		rooms = append(rooms, room)
	}
	return rooms, nil
}
