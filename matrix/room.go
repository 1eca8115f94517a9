package matrix

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

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

	// Federation (issue 13):

	// ServerACL, when set, is the room's m.room.server_acl from its creation. A CaseRoom
	// without one gets Options.CaseRoomACL's, when the client has one.
	ServerACL *ServerACL `json:",omitempty"`
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
		return "", false, fmt.Errorf("%w: the alias %s to ensure and RoomSpec.Alias %q differ", ErrInvalidRoom, alias, spec.Alias)
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
	acl, err := c.caseRoomACL(spec)
	if err != nil {
		return nil, err
	}
	if acl != nil {
		if err := c.checkACL(acl); err != nil {
			return nil, err
		}
		req.InitialState = append(req.InitialState, stateEvent(event.StateServerACL, "", acl.content()))
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
