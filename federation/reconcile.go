package federation

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/matrix"
)

//go:embed schema/*.sql
var schemaFS embed.FS

var upgrades = dbutil.BuildUpgradeTable().WithFSPath(schemaFS, "schema").Finish()

// versionTable is where this package records its schema version in the shared database.
const versionTable = "samtal_federation_version"

// ReconcilerOptions configure a Reconciler. The zero value looks at every room the client has
// joined.
type ReconcilerOptions struct {
	// Rooms lists the rooms to look at; nil means the client's joined rooms. Only rooms whose
	// ACL is managed by the list (ManagedBy) are changed either way.
	Rooms  func(ctx context.Context) ([]id.RoomID, error)
	Logger *slog.Logger // nil means the client's logger
}

// Reconciler keeps the server ACL of every managed room (one whose ACL samtal made from the
// list) equal to the list's, so that a member added can join and a member removed is shut
// out. Plan is the dry run; Apply makes the changes; both write every change to the audit
// table samtal_federation_audit in the client's database, and log it.
type Reconciler struct {
	client *matrix.Client
	db     *dbutil.Database
	rooms  func(ctx context.Context) ([]id.RoomID, error)
	log    *slog.Logger
}

// NewReconciler returns a Reconciler acting as client, its audit table in client's database
// (created or upgraded here). The client needs the power to change the rooms' ACLs (admin in
// the rooms it created).
func NewReconciler(ctx context.Context, client *matrix.Client, opts ReconcilerOptions) (*Reconciler, error) {
	db := client.Database().Child(versionTable, upgrades, dbutil.NoopLogger)
	if err := storage.Upgrade(ctx, db); err != nil {
		return nil, fmt.Errorf("federation: upgrade database schema: %w", err)
	}
	r := &Reconciler{client: client, db: db, rooms: opts.Rooms, log: opts.Logger}
	if r.log == nil {
		r.log = client.Logger()
	}
	if r.rooms == nil {
		r.rooms = func(ctx context.Context) ([]id.RoomID, error) {
			resp, err := client.Mautrix().JoinedRooms(ctx)
			if err != nil {
				return nil, fmt.Errorf("federation: list joined rooms: %w", err)
			}
			return resp.JoinedRooms, nil
		}
	}
	return r, nil
}

// Change is one room whose ACL differs from the list's.
type Change struct {
	Room   id.RoomID
	Before []string // the room's allow list now
	After  []string // the list's
}

// Added returns the hosts After allows that Before does not.
func (c Change) Added() []string { return minus(c.After, c.Before) }

// Removed returns the hosts Before allowed that After does not.
func (c Change) Removed() []string { return minus(c.Before, c.After) }

// Plan is what a reconciliation would change for one list.
type Plan struct {
	Version uint64   // the list's version
	Changes []Change // rooms to update
	Current int      // managed rooms already as the list says
	// Unreadable are rooms whose ACL could not be read (other than "none"), with why. They are
	// not changed; the next reconciliation tries again.
	Unreadable map[id.RoomID]error
}

// Plan compares the managed rooms' ACLs with list's and records the changes it would make,
// as dry-run rows of the audit table. It changes no room.
func (r *Reconciler) Plan(ctx context.Context, list *List) (*Plan, error) {
	if list == nil {
		return nil, ErrNoList
	}
	rooms, err := r.rooms(ctx)
	if err != nil {
		return nil, err
	}
	want := list.ServerACL()
	p := &Plan{Version: list.Version(), Unreadable: map[id.RoomID]error{}}
	for _, room := range rooms {
		acl, err := r.client.ServerACL(ctx, room)
		if errors.Is(err, matrix.ErrNotFound) {
			continue // no ACL: not managed by the list
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p.Unreadable[room] = err
			continue
		}
		if acl.ManagedBy != ManagedBy {
			continue
		}
		if sameACL(acl, want) {
			p.Current++
			continue
		}
		c := Change{Room: room, Before: slices.Clone(acl.Allow), After: slices.Clone(want.Allow)}
		p.Changes = append(p.Changes, c)
		r.audit(ctx, list.Version(), c, true, "planned", nil)
		r.log.Info("federation: ACL change planned (dry run)", "room", room, "version", list.Version(), "added", c.Added(), "removed", c.Removed())
	}
	return p, nil
}

// Apply makes the changes of plan, each recorded in the audit table and logged. It goes on
// past a room that fails and returns the failures joined.
func (r *Reconciler) Apply(ctx context.Context, list *List, plan *Plan) error {
	if list == nil || plan == nil || plan.Version != list.Version() {
		return fmt.Errorf("federation: the plan is not for this list")
	}
	want := *list.ServerACL()
	var errs []error
	for _, c := range plan.Changes {
		err := r.client.SetServerACL(ctx, c.Room, want)
		if err != nil {
			errs = append(errs, fmt.Errorf("room %s: %w", c.Room, err))
			r.audit(ctx, list.Version(), c, false, "failed", err)
			r.log.Error("federation: ACL update failed", "room", c.Room, "version", list.Version(), "err", err)
			continue
		}
		r.audit(ctx, list.Version(), c, false, "done", nil)
		r.log.Info("federation: ACL updated", "room", c.Room, "version", list.Version(), "added", c.Added(), "removed", c.Removed())
	}
	return errors.Join(errs...)
}

// Reconcile plans and applies at once, for Options.OnChange:
//
//	OnChange: func(ctx context.Context, _, l *federation.List) { _ = rec.Reconcile(ctx, l) }
func (r *Reconciler) Reconcile(ctx context.Context, list *List) error {
	p, err := r.Plan(ctx, list)
	if err != nil {
		r.log.Error("federation: cannot plan the ACL reconciliation", "err", err)
		return err
	}
	err = r.Apply(ctx, list, p)
	for room, rerr := range p.Unreadable {
		err = errors.Join(err, fmt.Errorf("room %s: read ACL: %w", room, rerr))
	}
	return err
}

// AuditEntry is one row of the audit table.
type AuditEntry struct {
	At          time.Time
	Actor       id.UserID
	Room        id.RoomID
	ListVersion uint64
	Action      string // "set_acl"
	DryRun      bool
	Before      []string
	After       []string
	Outcome     string // "planned", "done", "failed"
	Status      int    // HTTP status of a failure
	ErrCode     string // Matrix errcode of a failure, or "invalid" for a refused ACL
}

// Audit returns the audit rows of room ("" for all rooms), oldest first.
func (r *Reconciler) Audit(ctx context.Context, room id.RoomID) ([]AuditEntry, error) {
	rows, err := r.db.Query(ctx, `SELECT at, actor, room_id, list_version, action, dry_run, allow_before, allow_after, outcome, status, errcode
		FROM samtal_federation_audit WHERE $1 = '' OR room_id = $1 ORDER BY id`, string(room))
	if err != nil {
		return nil, fmt.Errorf("federation: read audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		var before, after string
		if err := rows.Scan(&at, &e.Actor, &e.Room, &e.ListVersion, &e.Action, &e.DryRun, &before, &after, &e.Outcome, &e.Status, &e.ErrCode); err != nil {
			return nil, fmt.Errorf("federation: read audit: %w", err)
		}
		e.At = time.UnixMilli(at)
		_ = json.Unmarshal([]byte(before), &e.Before)
		_ = json.Unmarshal([]byte(after), &e.After)
		out = append(out, e)
	}
	return out, rows.Err()
}

// audit writes one row. A failure to write is logged: the change itself is in the room's
// history, signed by the server.
func (r *Reconciler) audit(ctx context.Context, version uint64, c Change, dryRun bool, outcome string, cause error) {
	before, _ := json.Marshal(nonNil(c.Before))
	after, _ := json.Marshal(nonNil(c.After))
	status, code := errorKind(cause)
	_, err := r.db.Exec(context.WithoutCancel(ctx), `INSERT INTO samtal_federation_audit
		(at, actor, room_id, list_version, action, dry_run, allow_before, allow_after, outcome, status, errcode)
		VALUES ($1, $2, $3, $4, 'set_acl', $5, $6, $7, $8, $9, $10)`,
		time.Now().UnixMilli(), string(r.client.UserID()), string(c.Room), int64(version), dryRun, string(before), string(after), outcome, status, code)
	if err != nil {
		r.log.Error("federation: cannot write the audit row", "room", c.Room, "err", err)
	}
}

// errorKind is what makes a stored failure typed again: the HTTP status and errcode.
func errorKind(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var he *matrix.HTTPError
	if errors.As(err, &he) {
		return he.Status, he.ErrCode
	}
	if errors.Is(err, matrix.ErrInvalidContent) {
		return 0, "invalid"
	}
	return 0, "other"
}

func sameACL(a, b *matrix.ServerACL) bool {
	x, y := slices.Clone(a.Allow), slices.Clone(b.Allow)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y) && len(a.Deny) == 0 && a.AllowIPLiterals == b.AllowIPLiterals
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
