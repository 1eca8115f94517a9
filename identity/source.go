package identity

import (
	"context"
	"errors"

	"maunium.net/go/mautrix/id"
)

// ErrSourceUnavailable: a Source could not say who is active (LDAP down, bad credentials, an
// empty answer where people were expected). The Reconciler stops: an outage never reads as
// "everyone left".
var ErrSourceUnavailable = errors.New("identity: source of active people unavailable")

// Person is one account as the agency's source of truth sees it.
type Person struct {
	UserID id.UserID `json:"user_id"`
	Email  string    `json:"email,omitempty"`
	Active bool      `json:"active"`
	Reason string    `json:"reason,omitempty"` // why not active, as the source puts it
}

// Roster is what a Source says: the people it knows, active or not. People on a server in
// Complete are all listed: a member of a managed room on such a server who is not in People
// has left the agency. On other servers only those listed as inactive are offboarded.
type Roster struct {
	People   []Person
	Complete []string // server names whose every account the source lists
}

// Source tells the Reconciler who is active. Roster returns an error matching
// ErrSourceUnavailable when it cannot say.
type Source interface {
	Name() string
	Roster(ctx context.Context) (Roster, error)
}
