package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// ErrAdminUnsupported: the admin adapter has no way to do what was asked on its server.
var ErrAdminUnsupported = errors.New("identity: not supported by this homeserver's admin API")

// Admin acts on accounts of one homeserver with administrator rights: what the Reconciler does
// beyond kicking, for the agency's own people.
type Admin interface {
	// ServerName is the server whose accounts the adapter manages.
	ServerName() string
	// Logout ends every session (device) of user, and keeps them from logging in again with
	// their old credentials where the server allows that.
	Logout(ctx context.Context, user id.UserID) error
	// Evacuate makes user leave every room on the server, managed or not.
	Evacuate(ctx context.Context, user id.UserID) error
}

// AdminError is an admin API's refusal, with the status and errcode that make it typed.
type AdminError struct {
	Method, Path string
	Status       int
	ErrCode      string
	Message      string
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("identity: admin API %s %s: HTTP %d %s %s", e.Method, e.Path, e.Status, e.ErrCode, e.Message)
}

// Dendrite is the Admin adapter for Dendrite (0.13 and later), acting as a server
// administrator's client: Logout resets the password to a random one with logout_devices
// (/_dendrite/admin/resetPassword), which ends every session and locks password login;
// Evacuate calls /_dendrite/admin/evacuateUser.
type Dendrite struct {
	c    *matrix.Client // logged in as a server administrator
	http *http.Client
}

// NewDendrite returns the adapter for c's server; c's account must be a server administrator.
func NewDendrite(c *matrix.Client) *Dendrite {
	return &Dendrite{c: c, http: &http.Client{Timeout: 2 * time.Minute}}
}

// ServerName returns the administrator's server.
func (d *Dendrite) ServerName() string { return d.c.UserID().Homeserver() }

// Logout ends every session of user and sets a random password nobody knows.
func (d *Dendrite) Logout(ctx context.Context, user id.UserID) error {
	if err := d.own(user); err != nil {
		return err
	}
	pw := make([]byte, 32)
	_, _ = rand.Read(pw)
	body := map[string]any{"password": base64.RawURLEncoding.EncodeToString(pw), "logout_devices": true}
	var resp struct {
		Updated bool `json:"password_updated"`
	}
	if err := adminCall(ctx, d.http, d.c, http.MethodPost, "/_dendrite/admin/resetPassword/"+url.PathEscape(string(user)), body, &resp); err != nil {
		return err
	}
	if !resp.Updated {
		return fmt.Errorf("identity: Dendrite did not reset the password of %s", user)
	}
	return nil
}

// Evacuate makes user leave every room.
func (d *Dendrite) Evacuate(ctx context.Context, user id.UserID) error {
	if err := d.own(user); err != nil {
		return err
	}
	return adminCall(ctx, d.http, d.c, http.MethodPost, "/_dendrite/admin/evacuateUser/"+url.PathEscape(string(user)), nil, nil)
}

// Lock is not offered by Dendrite's admin API: a *CapabilityError.
func (d *Dendrite) Lock(context.Context, id.UserID) error { return d.lacks(ActionLock) }

// Suspend is not offered by Dendrite's admin API: a *CapabilityError.
func (d *Dendrite) Suspend(context.Context, id.UserID) error { return d.lacks(ActionSuspend) }

// Deactivate is not offered by Dendrite's admin API: a *CapabilityError.
func (d *Dendrite) Deactivate(context.Context, id.UserID, bool) error {
	return d.lacks(ActionDeactivate)
}

// Missing names the actions Dendrite's admin API has no endpoint for: lock, suspend and
// deactivate (Logout's new random password keeps the leaver out instead).
func (d *Dendrite) Missing(_ context.Context, kinds []ActionKind) ([]*CapabilityError, error) {
	var out []*CapabilityError
	for _, k := range kinds {
		if k == ActionLock || k == ActionSuspend || k == ActionDeactivate {
			out = append(out, d.lacks(k).(*CapabilityError))
		}
	}
	return out, nil
}

func (d *Dendrite) lacks(k ActionKind) error {
	return &CapabilityError{Server: d.ServerName(), Action: k, Capability: "a Dendrite admin endpoint to " + string(k),
		Detail: "logout (resetPassword with logout_devices) keeps the leaver out instead"}
}

func (d *Dendrite) own(user id.UserID) error {
	if user.Homeserver() != d.ServerName() {
		return fmt.Errorf("%w: %s is not on %s", ErrAdminUnsupported, user, d.ServerName())
	}
	return nil
}

// adminCall makes an authenticated request to c's homeserver as c.
func adminCall(ctx context.Context, hc *http.Client, c *matrix.Client, method, path string, in, out any) error {
	return adminRequest(ctx, hc, c.Mautrix().HomeserverURL.String(), c.Mautrix().AccessToken, method, path, in, out)
}
