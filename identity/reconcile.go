package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// ErrSafetyLimit: a plan would remove more of its scope than ReconcileOptions.MaxRemovePercent
// allows. Nothing was done; look at the plan, and apply it with Force if it is right.
var ErrSafetyLimit = errors.New("identity: offboarding plan over the safety limit")

// Scope is what the agency manages: the rooms the Reconciler may remove people from. Rooms
// named in Rooms, the children of each space in Spaces, and with WherePowerful every room the
// service account has joined and may kick in.
type Scope struct {
	Rooms         []id.RoomID
	Spaces        []id.RoomID
	WherePowerful bool
}

// ReconcileOptions configure a Reconciler. The zero value kicks from managed rooms, with a
// safety limit of 10 percent, and uses no admin rights.
type ReconcileOptions struct {
	// Admin, for the agency's own server: leavers there are logged out everywhere, and
	// evacuated from every room with Evacuate. nil: kicks only.
	Admin    Admin
	Evacuate bool
	// MaxRemovePercent is the largest share of the scope's members one run may remove;
	// 0 means 10.
	MaxRemovePercent float64
	Force            bool   // apply a plan over the safety limit
	Reason           string // the kick reason; "" means the source's reason
	Logger           *slog.Logger

	// Account actions on the own server (offboarding admin adapters): with an Admin that is an
	// AccountAdmin, leavers there are also locked, suspended or deactivated (Erase: with GDPR
	// erasure). An action the Admin's server does not offer is left out of the plan and named
	// in Plan.Missing.
	Lock, Suspend, Deactivate, Erase bool
}

// Reconciler compares who a Source says is active with who sits in the managed rooms, plans
// who must go, and, when asked, removes them: power levels lowered first where the leaver held
// power, then a kick from every managed room (on any server, through the client API), then,
// with an Admin, their sessions on the agency's own server ended. Every action goes into the
// AuditLog. A second run finds nothing to do.
type Reconciler struct {
	c      *matrix.Client
	source Source
	scope  Scope
	audit  *AuditLog
	opts   ReconcileOptions
	log    *slog.Logger
}

// NewReconciler returns a Reconciler acting as c, the agency's service account.
func NewReconciler(c *matrix.Client, source Source, scope Scope, audit *AuditLog, opts ReconcileOptions) *Reconciler {
	if opts.MaxRemovePercent <= 0 {
		opts.MaxRemovePercent = 10
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Reconciler{c: c, source: source, scope: scope, audit: audit, opts: opts, log: log}
}

// ActionKind is what an Action does.
type ActionKind string

// The actions of a plan, in the order they are applied for a leaver.
const (
	ActionDemote   ActionKind = "demote"   // lower the leaver's power level in a room to the default
	ActionKick     ActionKind = "kick"     // remove the leaver from a room
	ActionLogout   ActionKind = "logout"   // end every session on the own server (Admin)
	ActionEvacuate ActionKind = "evacuate" // leave every room on the own server (Admin)

	ActionLock       ActionKind = "lock"       // lock the account on the own server (AccountAdmin)
	ActionSuspend    ActionKind = "suspend"    // suspend the account on the own server (AccountAdmin)
	ActionDeactivate ActionKind = "deactivate" // deactivate the account on the own server (AccountAdmin)
)

// Action is one step of a plan.
type Action struct {
	Kind   ActionKind `json:"action"`
	User   id.UserID  `json:"user"`
	Room   id.RoomID  `json:"room,omitempty"`
	Reason string     `json:"reason"`
}

// Plan is what a run would do, computed without changing anything.
type Plan struct {
	RunID       string      `json:"run_id"`
	At          time.Time   `json:"at"`
	Source      string      `json:"source"`
	Rooms       int         `json:"rooms"`   // managed rooms
	Members     int         `json:"members"` // distinct members (joined or invited) of them
	Leavers     []id.UserID `json:"leavers"`
	Actions     []Action    `json:"actions"`
	Percent     float64     `json:"percent"` // Leavers in rooms as a share of Members
	OverLimit   bool        `json:"over_limit"`
	LimitReason string      `json:"limit,omitempty"`
	// Missing are the admin actions the options ask for that the own server does not offer:
	// they are not in Actions.
	Missing []*CapabilityError `json:"missing,omitempty"`
}

// Empty reports whether the plan does nothing.
func (p *Plan) Empty() bool { return len(p.Actions) == 0 }

// Plan asks the source and the rooms and returns what Apply would do. It returns the plan with
// an error matching ErrSafetyLimit when the plan is over the limit (and Force is off), and an
// error matching ErrSourceUnavailable, with no plan, when the source cannot say who is active.
func (r *Reconciler) Plan(ctx context.Context) (*Plan, error) {
	roster, err := r.source.Roster(ctx)
	if err != nil {
		if !errors.Is(err, ErrSourceUnavailable) {
			err = fmt.Errorf("%w: %w", ErrSourceUnavailable, err)
		}
		return nil, err
	}
	rooms, err := r.rooms(ctx)
	if err != nil {
		return nil, err
	}
	members := make([]roomMembers, 0, len(rooms))
	for _, room := range rooms {
		m, err := r.members(ctx, room)
		if err != nil {
			return nil, err
		}
		members = append(members, m)
	}
	missing, err := r.missingAdmin(ctx)
	if err != nil {
		return nil, err
	}
	return r.plan(r.c.UserID(), roster, members, r.ownAdminDone(ctx), missing)
}

// adminWanted lists the admin actions the options ask for, in plan order.
func (r *Reconciler) adminWanted() []ActionKind {
	if r.opts.Admin == nil {
		return nil
	}
	want := map[ActionKind]bool{ActionLogout: true, ActionEvacuate: r.opts.Evacuate, ActionLock: r.opts.Lock,
		ActionSuspend: r.opts.Suspend, ActionDeactivate: r.opts.Deactivate}
	var out []ActionKind
	for _, k := range adminKinds {
		if want[k] {
			out = append(out, k)
		}
	}
	return out
}

// missingAdmin asks the Admin which of the wanted actions its server lacks.
func (r *Reconciler) missingAdmin(ctx context.Context) (map[ActionKind]*CapabilityError, error) {
	a := r.opts.Admin
	if a == nil {
		return nil, nil
	}
	missing := map[ActionKind]*CapabilityError{}
	var ask []ActionKind
	for _, k := range r.adminWanted() {
		if _, ok := a.(AccountAdmin); !ok && (k == ActionLock || k == ActionSuspend || k == ActionDeactivate) {
			missing[k] = &CapabilityError{Server: a.ServerName(), Action: k, Capability: fmt.Sprintf("%s in the admin adapter (%T is no AccountAdmin)", k, a)}
			continue
		}
		ask = append(ask, k)
	}
	if cc, ok := a.(CapabilityChecker); ok && len(ask) > 0 {
		found, err := cc.Missing(ctx, ask)
		if err != nil {
			return nil, fmt.Errorf("identity: what the admin API of %s offers: %w", a.ServerName(), err)
		}
		for _, ce := range found {
			missing[ce.Action] = ce
		}
	}
	return missing, nil
}

// roomMembers is what a plan needs to know of a room.
type roomMembers struct {
	room    id.RoomID
	members []id.UserID
	power   map[id.UserID]int // levels above the room's default
	dflt    int
}

// plan is the pure part of Plan: who goes, and what is done.
func (r *Reconciler) plan(me id.UserID, roster Roster, rooms []roomMembers, adminDone func(ActionKind, id.UserID) bool, missing map[ActionKind]*CapabilityError) (*Plan, error) {
	p := &Plan{RunID: newRunID(), At: time.Now().UTC(), Source: r.source.Name(), Rooms: len(rooms)}
	known := make(map[id.UserID]Person, len(roster.People))
	for _, person := range roster.People {
		known[person.UserID] = person
	}
	complete := map[string]bool{}
	for _, s := range roster.Complete {
		complete[s] = true
	}
	why := func(u id.UserID) (string, bool) {
		if u == me {
			return "", false
		}
		if person, ok := known[u]; ok {
			return person.Reason, !person.Active
		}
		if complete[serverOf(u)] {
			return "not in " + r.source.Name(), true
		}
		return "", false
	}
	seen := map[id.UserID]bool{}
	leaving := map[id.UserID]bool{}
	for _, rm := range rooms {
		for _, u := range rm.members {
			seen[u] = true
			reason, gone := why(u)
			if !gone {
				continue
			}
			if !leaving[u] {
				leaving[u] = true
				p.Leavers = append(p.Leavers, u)
			}
			if rm.power[u] > rm.dflt {
				p.Actions = append(p.Actions, Action{Kind: ActionDemote, User: u, Room: rm.room, Reason: reason})
			}
			p.Actions = append(p.Actions, Action{Kind: ActionKick, User: u, Room: rm.room, Reason: reason})
		}
	}
	p.Members = len(seen)
	inRooms := len(p.Leavers)
	if a := r.opts.Admin; a != nil {
		// The agency's own people who are inactive lose their sessions even when they are in
		// no managed room; those who are in rooms, once.
		ownServer := a.ServerName()
		var own []id.UserID
		listed := map[id.UserID]bool{}
		for _, person := range roster.People {
			if !person.Active && serverOf(person.UserID) == ownServer && !listed[person.UserID] {
				listed[person.UserID] = true
				own = append(own, person.UserID)
			}
		}
		for _, u := range p.Leavers {
			if serverOf(u) == ownServer && !listed[u] {
				listed[u] = true
				own = append(own, u)
			}
		}
		wanted := r.adminWanted()
		for _, k := range wanted {
			if ce := missing[k]; ce != nil && len(own) > 0 {
				p.Missing = append(p.Missing, ce)
			}
		}
		for _, u := range own {
			reason, _ := why(u)
			added := false
			for _, k := range wanted {
				if missing[k] == nil && !adminDone(k, u) {
					p.Actions = append(p.Actions, Action{Kind: k, User: u, Reason: reason})
					added = true
				}
			}
			if added && !leaving[u] {
				leaving[u] = true
				p.Leavers = append(p.Leavers, u)
			}
		}
	}
	if p.Members > 0 {
		p.Percent = 100 * float64(inRooms) / float64(p.Members)
	}
	if p.Percent > r.opts.MaxRemovePercent {
		p.OverLimit = true
		p.LimitReason = fmt.Sprintf("would remove %d of %d members (%.1f%%), over the limit of %.1f%%", inRooms, p.Members, p.Percent, r.opts.MaxRemovePercent)
		if !r.opts.Force {
			return p, fmt.Errorf("%w: %s", ErrSafetyLimit, p.LimitReason)
		}
	}
	return p, nil
}

// Apply carries a plan out, action by action, each written to the audit log with its outcome.
// A plan over the safety limit is refused unless Force is set. Failed actions do not stop the
// others; they are returned together.
func (r *Reconciler) Apply(ctx context.Context, p *Plan) error {
	if p.OverLimit && !r.opts.Force {
		entry := &AuditEntry{RunID: p.RunID, Actor: r.c.UserID(), Action: "refuse", Target: "*", Reason: p.LimitReason, Source: p.Source, Outcome: "failed"}
		if err := r.audit.Append(ctx, entry); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrSafetyLimit, p.LimitReason)
	}
	var errs []error
	for _, a := range p.Actions {
		err := r.act(ctx, a)
		entry := &AuditEntry{RunID: p.RunID, Actor: r.c.UserID(), Action: string(a.Kind), Target: a.User, Room: a.Room,
			Reason: a.Reason, Source: p.Source, Outcome: "ok"}
		if err != nil {
			entry.Outcome, entry.Status, entry.ErrCode = "failed", httpStatus(err), errCode(err)
			var ae *AdminError
			var ce *CapabilityError
			if errors.As(err, &ae) {
				entry.Status, entry.ErrCode = ae.Status, ae.ErrCode
			} else if errors.As(err, &ce) {
				entry.Status, entry.ErrCode = ce.Status, ce.ErrCode
			}
			entry.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s %s %s: %w", a.Kind, a.User, a.Room, err))
		}
		if aerr := r.audit.Append(ctx, entry); aerr != nil {
			return errors.Join(append(errs, aerr)...)
		}
		r.log.Info("identity: offboarding", "action", a.Kind, "user", a.User, "room", a.Room, "outcome", entry.Outcome)
	}
	return errors.Join(errs...)
}

// Run plans and applies in one go.
func (r *Reconciler) Run(ctx context.Context) (*Plan, error) {
	p, err := r.Plan(ctx)
	if err != nil {
		return p, err
	}
	return p, r.Apply(ctx, p)
}

// Offboard removes one person at once, as a SCIM deprovisioning or a logout event asks: from
// every managed room, and on the own server with an Admin. The safety limit does not apply to
// one named person.
func (r *Reconciler) Offboard(ctx context.Context, user id.UserID, reason string) (*Plan, error) {
	if err := matrix.ValidateUserID(user); err != nil {
		return nil, err
	}
	rooms, err := r.rooms(ctx)
	if err != nil {
		return nil, err
	}
	members := make([]roomMembers, 0, len(rooms))
	for _, room := range rooms {
		m, err := r.members(ctx, room)
		if err != nil {
			return nil, err
		}
		members = append(members, m)
	}
	one := *r
	one.opts.Force = true
	one.source = namedSource{name: r.source.Name(), person: Person{UserID: user, Reason: reason}}
	missing, err := r.missingAdmin(ctx)
	if err != nil {
		return nil, err
	}
	p, err := one.plan(r.c.UserID(), Roster{People: []Person{{UserID: user, Reason: reason}}}, members, r.ownAdminDone(ctx), missing)
	if err != nil {
		return p, err
	}
	return p, one.Apply(ctx, p)
}

type namedSource struct {
	name   string
	person Person
}

func (n namedSource) Name() string { return n.name }
func (n namedSource) Roster(context.Context) (Roster, error) {
	return Roster{People: []Person{n.person}}, nil
}

func (r *Reconciler) act(ctx context.Context, a Action) error {
	reason := r.opts.Reason
	if reason == "" {
		reason = a.Reason
	}
	switch a.Kind {
	case ActionDemote:
		return r.c.SetPowerLevel(ctx, a.Room, a.User, matrix.PowerDefault)
	case ActionKick:
		return r.c.Kick(ctx, a.Room, a.User, reason)
	case ActionLogout:
		return r.opts.Admin.Logout(ctx, a.User)
	case ActionEvacuate:
		return r.opts.Admin.Evacuate(ctx, a.User)
	case ActionLock, ActionSuspend, ActionDeactivate:
		aa, ok := r.opts.Admin.(AccountAdmin)
		if !ok {
			return &CapabilityError{Server: r.opts.Admin.ServerName(), Action: a.Kind, Capability: string(a.Kind) + " in the admin adapter"}
		}
		switch a.Kind {
		case ActionLock:
			return aa.Lock(ctx, a.User)
		case ActionSuspend:
			return aa.Suspend(ctx, a.User)
		}
		return aa.Deactivate(ctx, a.User, r.opts.Erase)
	}
	return fmt.Errorf("identity: unknown action %q", a.Kind)
}

// ownAdminDone returns a check of the audit log for admin actions already done; on a read
// error it says "not done", so that the action is planned again (they are harmless twice).
func (r *Reconciler) ownAdminDone(ctx context.Context) func(ActionKind, id.UserID) bool {
	return func(k ActionKind, u id.UserID) bool {
		done, err := r.audit.done(ctx, string(k), u)
		return err == nil && done
	}
}

// rooms lists the managed rooms, each once.
func (r *Reconciler) rooms(ctx context.Context) ([]id.RoomID, error) {
	var out []id.RoomID
	add := func(room id.RoomID) {
		if !slices.Contains(out, room) {
			out = append(out, room)
		}
	}
	for _, room := range r.scope.Rooms {
		add(room)
	}
	for _, space := range r.scope.Spaces {
		children, err := r.c.SpaceChildren(ctx, space)
		if err != nil {
			return nil, fmt.Errorf("identity: children of the space %s: %w", space, err)
		}
		for _, ch := range children {
			add(ch)
		}
	}
	if r.scope.WherePowerful {
		joined, err := r.c.Mautrix().JoinedRooms(ctx)
		if err != nil {
			return nil, fmt.Errorf("identity: joined rooms: %w", err)
		}
		for _, room := range joined.JoinedRooms {
			var pl event.PowerLevelsEventContent
			if err := r.c.Mautrix().StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
				continue
			}
			if pl.GetUserLevel(r.c.UserID()) >= pl.Kick() {
				add(room)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("identity: the scope names no room")
	}
	return out, nil
}

func (r *Reconciler) members(ctx context.Context, room id.RoomID) (roomMembers, error) {
	resp, err := r.c.Mautrix().Members(ctx, room, mautrix.ReqMembers{})
	if err != nil {
		return roomMembers{}, fmt.Errorf("identity: members of %s: %w", room, err)
	}
	rm := roomMembers{room: room, power: map[id.UserID]int{}}
	for _, evt := range resp.Chunk {
		_ = evt.Content.ParseRaw(evt.Type)
		mem := evt.Content.AsMember()
		if mem.Membership == event.MembershipJoin || mem.Membership == event.MembershipInvite {
			rm.members = append(rm.members, id.UserID(evt.GetStateKey()))
		}
	}
	var pl event.PowerLevelsEventContent
	if err := r.c.Mautrix().StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		return roomMembers{}, fmt.Errorf("identity: power levels of %s: %w", room, err)
	}
	rm.dflt = pl.UsersDefault
	for u, lvl := range pl.Users {
		rm.power[u] = lvl
	}
	return rm, nil
}

// serverOf is the server name of a user ID, without the validation of id.UserID.Homeserver,
// which a plan over thousands of members cannot afford per member.
func serverOf(u id.UserID) string {
	_, server, _ := strings.Cut(string(u), ":")
	return server
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}
