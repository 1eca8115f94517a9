package identity

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// accountModerationCap is the capability that advertises the spec's account moderation
// endpoints (client-server API v1.18, MSC4323).
const accountModerationCap = "m.account_moderation"

// AccountModeration is the Admin adapter for the account moderation endpoints of the Matrix
// spec v1.18 (PUT /_matrix/client/v1/admin/lock/{userId} and .../suspend/{userId}), usable
// with any homeserver that implements them, acting as a server administrator's client.
//
// The spec has no logout of another user: Logout locks the account, after which the server
// refuses every request of the user's sessions (M_USER_LOCKED, a soft logout) and every new
// login. Evacuate and Deactivate are not in the spec: a *CapabilityError. Missing reads the
// m.account_moderation capability (GET /_matrix/client/v3/capabilities) before a plan; an
// endpoint that answers M_UNRECOGNIZED is a *CapabilityError too.
type AccountModeration struct {
	c    *matrix.Client // logged in as a server administrator
	http *http.Client
}

// NewAccountModeration returns the adapter for c's server; c's account must be a server
// administrator. hc makes the requests; nil means a client with a two-minute timeout.
func NewAccountModeration(c *matrix.Client, hc *http.Client) *AccountModeration {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return &AccountModeration{c: c, http: hc}
}

// ServerName returns the administrator's server.
func (m *AccountModeration) ServerName() string { return m.c.UserID().Homeserver() }

// Logout locks user's account: see the type's documentation.
func (m *AccountModeration) Logout(ctx context.Context, user id.UserID) error {
	return m.set(ctx, ActionLogout, "lock", "locked", user)
}

// Evacuate is not in the spec: a *CapabilityError.
func (m *AccountModeration) Evacuate(context.Context, id.UserID) error {
	return m.notInSpec(ActionEvacuate)
}

// Lock locks user's account.
func (m *AccountModeration) Lock(ctx context.Context, user id.UserID) error {
	return m.set(ctx, ActionLock, "lock", "locked", user)
}

// Suspend suspends user's account.
func (m *AccountModeration) Suspend(ctx context.Context, user id.UserID) error {
	return m.set(ctx, ActionSuspend, "suspend", "suspended", user)
}

// Deactivate is not in the spec's moderation API: a *CapabilityError.
func (m *AccountModeration) Deactivate(context.Context, id.UserID, bool) error {
	return m.notInSpec(ActionDeactivate)
}

func (m *AccountModeration) notInSpec(k ActionKind) *CapabilityError {
	return &CapabilityError{Server: m.ServerName(), Action: k, Capability: "a spec endpoint to " + string(k) + " another user",
		Detail: "the spec's account moderation offers lock and suspend; use the server's own admin adapter"}
}

// set PUTs {field: true} to /_matrix/client/v1/admin/{what}/{user} and checks the answer.
func (m *AccountModeration) set(ctx context.Context, k ActionKind, what, field string, user id.UserID) error {
	if err := ownUser(m.ServerName(), k, user); err != nil {
		return err
	}
	var resp map[string]any
	path := "/_matrix/client/v1/admin/" + what + "/" + url.PathEscape(string(user))
	err := adminCall(ctx, m.http, m.c, http.MethodPut, path, map[string]any{field: true}, &resp)
	if err != nil {
		return asCapability(err, m.ServerName(), k, accountModerationCap+"."+what+" (PUT /_matrix/client/v1/admin/"+what+")")
	}
	if v, _ := resp[field].(bool); !v {
		return fmt.Errorf("identity: %s answered %s with %s not true", m.ServerName(), path, field)
	}
	return nil
}

// Missing reads the m.account_moderation capability: lock (also what Logout needs) and
// suspend each missing unless advertised as true. Evacuate and Deactivate are always missing.
func (m *AccountModeration) Missing(ctx context.Context, kinds []ActionKind) ([]*CapabilityError, error) {
	var caps struct {
		Capabilities map[string]map[string]any `json:"capabilities"`
	}
	if err := adminCall(ctx, m.http, m.c, http.MethodGet, "/_matrix/client/v3/capabilities", nil, &caps); err != nil {
		return nil, fmt.Errorf("identity: capabilities of %s: %w", m.ServerName(), err)
	}
	mod := caps.Capabilities[accountModerationCap]
	var out []*CapabilityError
	for _, k := range kinds {
		switch k {
		case ActionLogout, ActionLock, ActionSuspend:
			what := "lock"
			if k == ActionSuspend {
				what = "suspend"
			}
			if on, _ := mod[what].(bool); !on {
				out = append(out, &CapabilityError{Server: m.ServerName(), Action: k, Capability: accountModerationCap + "." + what,
					Detail: "the server does not advertise it in /capabilities (spec v1.18)"})
			}
		default:
			out = append(out, m.notInSpec(k))
		}
	}
	return out, nil
}
