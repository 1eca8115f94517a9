package matrix

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrInvalidUserID is wrapped by the error for a malformed user ID, returned before any
// request is made.
var ErrInvalidUserID = errors.New("matrix: invalid user ID")

// StateCase is the state event that ties a CaseRoom to its case, content {"case_id": "4711"},
// so that the case system can tell its rooms apart from others and find a case's room again.
var StateCase = event.Type{Type: "io.samtal.case", Class: event.StateEventType}

// Preset is the kind of room CreateRoom makes: who may join, who reads earlier history, and
// whether it is encrypted unless RoomSpec.Encrypted says otherwise.
type Preset int

const (
	// PrivateChat is invite-only; members read the history from before they joined. Encrypted.
	PrivateChat Preset = iota
	// PublicRoom can be joined by anyone who knows its ID or alias (it is not listed in the
	// server's room directory). Since anyone can walk in, members read only what was said after
	// they joined. Not encrypted: encryption does not protect what anyone may read.
	PublicRoom
	// DirectChat is a private conversation: invite-only, the invites marked as direct so that
	// clients list it with people rather than rooms, and invitees as powerful as the creator.
	// Encrypted.
	DirectChat
	// CaseRoom is an invite-only room about one case, tagged with RoomSpec.CaseID in a StateCase
	// event. Members read the history from before they joined, because whoever takes over a case
	// needs its record. Encrypted.
	CaseRoom
)

// String returns the preset's name, as in "CaseRoom".
func (p Preset) String() string {
	switch p {
	case PrivateChat:
		return "PrivateChat"
	case PublicRoom:
		return "PublicRoom"
	case DirectChat:
		return "DirectChat"
	case CaseRoom:
		return "CaseRoom"
	}
	return fmt.Sprintf("Preset(%d)", int(p))
}

// PowerLevel is what a member may do in a room: send, moderate, administer.
type PowerLevel int

// The levels that clients name. Other values in between are valid and rarely useful.
const (
	PowerDefault   PowerLevel = 0   // may talk
	PowerModerator PowerLevel = 50  // may also kick, ban, redact and change name and topic
	PowerAdmin     PowerLevel = 100 // may also change power levels and encryption
)

// RoomSpec describes a room to create. The zero value is an encrypted, invite-only room with
// nobody else in it.
type RoomSpec struct {
	Preset      Preset                   // PrivateChat unless set
	Name        string                   // optional; at most 255 bytes
	Topic       string                   // optional; at most 4 KiB
	Invite      []id.UserID              // invited when the room is created; the creator is skipped
	Encrypted   *bool                    // nil: encrypted for every preset but PublicRoom
	Alias       string                   // optional localpart of an alias on the client's own server, such as "case-4711"
	PowerLevels map[id.UserID]PowerLevel // levels other than the preset's; the creator stays PowerAdmin unless listed
	Space       id.RoomID                // optional space the room is added to (see AddToSpace)
	CaseID      string                   // the case a CaseRoom is about, required there; stored as StateCase
}

// Limits on a RoomSpec's text: a room's state travels to every member's client with each
// initial sync, and some servers refuse longer names.
const (
	maxRoomName  = 255
	maxRoomTopic = 4 << 10
	maxCaseID    = 255
)

// CreateRoom creates a room as spec describes and returns its ID. spec is checked before any
// request. When spec.Space is set and adding the room to it fails, the new room's ID comes
// with the error.
func (c *Client) CreateRoom(ctx context.Context, spec RoomSpec) (id.RoomID, error) {
	req, err := c.createRequest(spec, false)
	if err != nil {
		return "", err
	}
	return c.create(ctx, req, spec.Space)
}

// EnsureRoom returns the room that alias points at, and creates it as spec describes when the
// alias is unknown, exactly once even when several processes ask at the same time: the server
// lets one of them claim the alias, and the others leave the rooms they made and return the
// winner's. created is true for the caller that made the room.
//
// The alias must be on the client's own server. Invites and the link to spec.Space are sent
// only after the alias is claimed, so that nobody is invited to a room that is then abandoned;
// for the same reason DirectChat invites are not marked as direct. If one of those steps fails,
// the room is returned with the error: it exists and the alias points at it, so a second
// EnsureRoom returns it with created false, and the caller finishes with Invite or AddToSpace.
//
// EnsureRoom does not join a room someone else created; see Join.
func (c *Client) EnsureRoom(ctx context.Context, alias id.RoomAlias, spec RoomSpec) (room id.RoomID, created bool, err error) {
	if err := c.checkNewAlias(alias); err != nil {
		return "", false, err
	}
	local, _ := splitAlias(alias)
	if spec.Alias != "" && spec.Alias != local {
		return "", false, fmt.Errorf("%w: spec.Alias %q differs from the alias %s to ensure", ErrInvalidRoom, spec.Alias, alias)
	}
	invite, space := spec.Invite, spec.Space
	spec.Alias, spec.Space = "", "" // claimed below, so that losing a race stays invisible
	req, err := c.createRequest(spec, false)
	if err != nil {
		return "", false, err
	}
	req.Invite, req.IsDirect = nil, false

	if room, err := c.ResolveAlias(ctx, alias); err == nil {
		return room, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return "", false, err
	}
	room, err = c.create(ctx, req, "")
	if err != nil {
		return "", false, err
	}
	if _, claimErr := c.mx.CreateAlias(ctx, alias, room); claimErr != nil {
		// The error does not say reliably who won: a server may answer a lost race with 409 or
		// a failed insert with 500, and a retried request we won may come back as 409. The
		// directory does.
		winner, err := c.ResolveAlias(ctx, alias)
		switch {
		case err == nil && winner == room:
			// Ours after all.
		case err == nil:
			c.log.Debug("another process claimed the alias first; using its room", "alias", alias, "room", winner, "abandoned", room)
			c.abandon(ctx, room)
			return winner, false, nil
		case errors.Is(err, ErrNotFound):
			// Nobody holds the alias and the server would not give it to us: the room is of no use.
			c.abandon(ctx, room)
			return "", false, fmt.Errorf("matrix: claim alias %s: %w", alias, wrapErr(claimErr))
		default:
			// Who holds the alias is unknown, and it may be this room: leaving it could leave
			// the alias pointing at a room nobody is in. A second EnsureRoom will know.
			return "", false, fmt.Errorf("matrix: claim alias %s for %s, then resolve it: %w (claim: %w)", alias, room, err, wrapErr(claimErr))
		}
	}
	canonical := &event.CanonicalAliasEventContent{Alias: alias}
	if _, err := c.mx.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", canonical); err != nil {
		return room, true, fmt.Errorf("matrix: publish alias %s in %s: %w", alias, room, wrapErr(err))
	}
	for _, u := range c.invitees(invite) {
		if err := c.Invite(ctx, room, u); err != nil {
			return room, true, err
		}
	}
	if space != "" {
		if err := c.AddToSpace(ctx, space, room); err != nil {
			return room, true, err
		}
	}
	return room, true, nil
}

// abandon leaves and forgets a room that lost the race for an alias. It runs even when ctx has
// ended, since an orphan room would stay in the account's room list for good; failing that,
// the orphan is only clutter, so it is logged rather than returned.
func (c *Client) abandon(ctx context.Context, room id.RoomID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.Leave(ctx, room); err != nil {
		c.log.Warn("could not leave a room that lost the race for its alias", "room", room, "err", err)
	}
}

// create sends req and, when space is set, adds the new room to it.
func (c *Client) create(ctx context.Context, req *mautrix.ReqCreateRoom, space id.RoomID) (id.RoomID, error) {
	resp, err := c.mx.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("matrix: create room: %w", wrapErr(err))
	}
	if space != "" {
		if err := c.AddToSpace(ctx, space, resp.RoomID); err != nil {
			return resp.RoomID, err
		}
	}
	return resp.RoomID, nil
}

// createRequest checks spec and turns it into a createRoom request. A space is never
// encrypted: it holds no conversation, and clients must read its state to list its rooms.
func (c *Client) createRequest(spec RoomSpec, space bool) (*mautrix.ReqCreateRoom, error) {
	if err := c.checkSpec(spec); err != nil {
		return nil, err
	}
	req := &mautrix.ReqCreateRoom{
		Name:          spec.Name,
		Topic:         spec.Topic,
		RoomAliasName: spec.Alias,
		Invite:        c.invitees(spec.Invite),
	}
	history := event.HistoryVisibilityShared
	encrypted := !space
	switch spec.Preset {
	case PrivateChat, CaseRoom:
		req.Preset = "private_chat"
	case PublicRoom:
		req.Preset = "public_chat"
		history = event.HistoryVisibilityJoined
		encrypted = false
	case DirectChat:
		req.Preset = "trusted_private_chat"
		req.IsDirect = true
	}
	if spec.Encrypted != nil {
		encrypted = *spec.Encrypted
	}
	req.InitialState = append(req.InitialState, stateEvent(event.StateHistoryVisibility, "",
		&event.HistoryVisibilityEventContent{HistoryVisibility: history}))
	if encrypted {
		req.InitialState = append(req.InitialState, stateEvent(event.StateEncryption, "",
			&event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}))
	}
	if spec.CaseID != "" {
		req.InitialState = append(req.InitialState, stateEvent(StateCase, "", map[string]string{"case_id": spec.CaseID}))
	}
	if len(spec.PowerLevels) > 0 {
		// Servers differ in whether "users" in the override replaces or extends the preset's,
		// so it spells out the creator and, in a DirectChat, the invitees as the preset would.
		users := map[id.UserID]int{c.UserID(): int(PowerAdmin)}
		if spec.Preset == DirectChat {
			for _, u := range req.Invite {
				users[u] = int(PowerAdmin)
			}
		}
		for u, l := range spec.PowerLevels {
			users[u] = int(l)
		}
		req.PowerLevelOverride = &event.PowerLevelsEventContent{Users: users}
	}
	if space {
		req.CreationContent = map[string]any{"type": event.RoomTypeSpace}
	}
	return req, nil
}

// checkSpec reports what is wrong with spec, before any request.
func (c *Client) checkSpec(spec RoomSpec) error {
	if spec.Preset < PrivateChat || spec.Preset > CaseRoom {
		return fmt.Errorf("%w: unknown room preset %s", ErrInvalidContent, spec.Preset)
	}
	for _, t := range []struct {
		what, s string
		max     int
	}{{"room name", spec.Name, maxRoomName}, {"room topic", spec.Topic, maxRoomTopic}, {"case ID", spec.CaseID, maxCaseID}} {
		if len(t.s) > t.max || !utf8.ValidString(t.s) {
			return fmt.Errorf("%w: %s must be valid UTF-8 of at most %d bytes", ErrInvalidContent, t.what, t.max)
		}
	}
	if spec.Preset == CaseRoom && strings.TrimSpace(spec.CaseID) == "" {
		return fmt.Errorf("%w: a CaseRoom needs a CaseID", ErrInvalidContent)
	}
	if spec.Alias != "" {
		if err := c.checkNewAlias(id.NewRoomAlias(spec.Alias, c.UserID().Homeserver())); err != nil {
			return err
		}
	}
	if spec.Space != "" {
		if err := ValidateRoomID(spec.Space); err != nil {
			return err
		}
	}
	for _, u := range spec.Invite {
		if err := ValidateUserID(u); err != nil {
			return err
		}
	}
	for u := range spec.PowerLevels {
		if err := ValidateUserID(u); err != nil {
			return err
		}
	}
	return nil
}

// invitees is users without the client's own account and without repeats: servers refuse to
// invite someone who is already in the room.
func (c *Client) invitees(users []id.UserID) []id.UserID {
	var out []id.UserID
	for _, u := range users {
		if u != c.UserID() && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// stateEvent is an event for a createRoom request's initial_state.
func stateEvent(t event.Type, key string, content any) *event.Event {
	return &event.Event{Type: t, StateKey: &key, Content: event.Content{Parsed: content}}
}

// SetPowerLevel gives user level in room. It reads the room's power levels and writes them
// back with the one change, keeping what this package does not know about; two changes at the
// same time can overwrite each other.
func (c *Client) SetPowerLevel(ctx context.Context, room id.RoomID, user id.UserID, level PowerLevel) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	var content map[string]any
	if err := c.mx.StateEvent(ctx, room, event.StatePowerLevels, "", &content); err != nil {
		return fmt.Errorf("matrix: read power levels of %s: %w", room, wrapErr(err))
	}
	if content == nil {
		content = map[string]any{}
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	// A user not listed has users_default; leaving them out keeps the event small.
	if def, _ := content["users_default"].(float64); float64(level) == def {
		delete(users, string(user))
	} else {
		users[string(user)] = int(level)
	}
	content["users"] = users
	if _, err := c.mx.SendStateEvent(ctx, room, event.StatePowerLevels, "", content); err != nil {
		return fmt.Errorf("matrix: set power level of %s in %s to %d: %w", user, room, level, wrapErr(err))
	}
	return nil
}

// Invite invites user to room.
func (c *Client) Invite(ctx context.Context, room id.RoomID, user id.UserID) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: user}); err != nil {
		return fmt.Errorf("matrix: invite %s to %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Kick removes user from room, or withdraws their invite; they may come back if invited or if
// the room is public. reason is shown to them and to the room; it may be empty.
func (c *Client) Kick(ctx context.Context, room id.RoomID, user id.UserID, reason string) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: user, Reason: reason}); err != nil {
		return fmt.Errorf("matrix: kick %s from %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Ban removes user from room and keeps them out until Unban. reason is shown to them and to
// the room; it may be empty.
func (c *Client) Ban(ctx context.Context, room id.RoomID, user id.UserID, reason string) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: user, Reason: reason}); err != nil {
		return fmt.Errorf("matrix: ban %s from %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Unban lifts a ban; user may then be invited again.
func (c *Client) Unban(ctx context.Context, room id.RoomID, user id.UserID) error {
	if err := checkRoomUser(room, user); err != nil {
		return err
	}
	if _, err := c.mx.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: user}); err != nil {
		return fmt.Errorf("matrix: unban %s in %s: %w", user, room, wrapErr(err))
	}
	return nil
}

// Leave leaves room (or declines its invite) and forgets it, so that it no longer appears in
// the account's history.
func (c *Client) Leave(ctx context.Context, room id.RoomID) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	if _, err := c.mx.LeaveRoom(ctx, room); err != nil {
		return fmt.Errorf("matrix: leave %s: %w", room, wrapErr(err))
	}
	if _, err := c.mx.ForgetRoom(ctx, room); err != nil {
		return fmt.Errorf("matrix: forget %s: %w", room, wrapErr(err))
	}
	return nil
}

// Join joins a room by ID ("!abc:example.se") or alias ("#case-4711:example.se"), or accepts
// its invite, and returns the room's ID.
func (c *Client) Join(ctx context.Context, roomIDOrAlias string) (id.RoomID, error) {
	var err error
	switch {
	case strings.HasPrefix(roomIDOrAlias, "!"):
		err = ValidateRoomID(id.RoomID(roomIDOrAlias))
	case strings.HasPrefix(roomIDOrAlias, "#"):
		err = ValidateAlias(id.RoomAlias(roomIDOrAlias))
	default:
		err = fmt.Errorf("%w: %q is neither a room ID (!...) nor an alias (#...)", ErrInvalidRoom, roomIDOrAlias)
	}
	if err != nil {
		return "", err
	}
	resp, err := c.mx.JoinRoom(ctx, roomIDOrAlias, nil)
	if err != nil {
		return "", fmt.Errorf("matrix: join %s: %w", roomIDOrAlias, wrapErr(err))
	}
	return resp.RoomID, nil
}

// ResolveAlias returns the room alias points at; the error matches ErrNotFound when it points
// nowhere.
func (c *Client) ResolveAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	if err := ValidateAlias(alias); err != nil {
		return "", err
	}
	resp, err := c.mx.ResolveAlias(ctx, alias)
	if err != nil {
		return "", fmt.Errorf("matrix: resolve %s: %w", alias, wrapErr(err))
	}
	return resp.RoomID, nil
}

// SetAlias points alias, on the client's own server, at room. It fails if the alias points
// elsewhere already. It does not make it the room's canonical alias, which clients show.
func (c *Client) SetAlias(ctx context.Context, alias id.RoomAlias, room id.RoomID) error {
	if err := c.checkNewAlias(alias); err != nil {
		return err
	}
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	if _, err := c.mx.CreateAlias(ctx, alias, room); err != nil {
		return fmt.Errorf("matrix: set alias %s to %s: %w", alias, room, wrapErr(err))
	}
	return nil
}

// ValidateAlias checks that alias is syntactically a room alias, #localpart:server, before any
// request. It accepts any localpart other servers may have made; aliases this package creates
// must also follow the stricter grammar of RoomSpec.Alias.
func ValidateAlias(alias id.RoomAlias) error {
	s := string(alias)
	local, server := splitAlias(alias)
	if len(s) > 255 || !strings.HasPrefix(s, "#") || !utf8.ValidString(s) || local == "" ||
		strings.ContainsFunc(local, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) ||
		!id.ValidateServerName(server) {
		return fmt.Errorf("%w: %q is not a room alias (#localpart:server)", ErrInvalidRoom, alias)
	}
	return nil
}

// aliasLocalpart is the grammar of the aliases this package creates: that of user IDs, which
// every server and client handles, and which needs no escaping in matrix.to links.
var aliasLocalpart = regexp.MustCompile(`^[a-z0-9._=/-]+$`)

// checkNewAlias checks an alias the client is about to create: valid, in the strict grammar,
// and on the client's own server, the only one that lets it create aliases.
func (c *Client) checkNewAlias(alias id.RoomAlias) error {
	if err := ValidateAlias(alias); err != nil {
		return err
	}
	local, server := splitAlias(alias)
	if !aliasLocalpart.MatchString(local) {
		return fmt.Errorf("%w: alias %s: the localpart may hold only a-z, 0-9 and ._=-/", ErrInvalidRoom, alias)
	}
	if own := c.UserID().Homeserver(); server != own {
		return fmt.Errorf("%w: alias %s is not on %s, the server of %s, which is the only one that can create it", ErrInvalidRoom, alias, own, c.UserID())
	}
	return nil
}

// splitAlias returns the parts of #localpart:server.
func splitAlias(alias id.RoomAlias) (local, server string) {
	local, server, _ = strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	return local, server
}

// ValidateUserID checks that u is syntactically a user ID, @localpart:server, before any
// request. It accepts the historical localparts that older servers allowed.
func ValidateUserID(u id.UserID) error {
	local, _, err := u.ParseAndValidateRelaxed()
	if err == nil && (local == "" || strings.ContainsFunc(local, func(r rune) bool { return r <= ' ' || r > '~' })) {
		err = errors.New("localpart must be printable ASCII")
	}
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidUserID, u, err)
	}
	return nil
}

// checkRoomUser checks the arguments of the membership methods.
func checkRoomUser(room id.RoomID, user id.UserID) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	return ValidateUserID(user)
}
