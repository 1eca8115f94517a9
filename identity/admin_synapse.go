package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// synapseDeviceBatch bounds the device IDs of one delete_devices request.
const synapseDeviceBatch = 100

// Synapse is the Admin adapter for Synapse's admin API (/_synapse/admin), acting as a server
// administrator's client:
//
//   - Logout lists the user's devices (GET /_synapse/admin/v2/users/{user}/devices) and deletes
//     them (POST .../delete_devices), which invalidates every access token;
//   - Lock sets locked (PUT /_synapse/admin/v2/users/{user});
//   - Suspend: PUT /_synapse/admin/v1/suspend/{user} (Synapse 1.114 and later);
//   - Deactivate: POST /_synapse/admin/v1/deactivate/{user}, with erase, which also makes the
//     user leave every room.
//
// Synapse has no admin endpoint to make a user leave every room short of deactivation:
// Evacuate is a *CapabilityError. Where the admin API is not exposed (a reverse proxy that
// keeps /_synapse/admin internal), Missing says so before a plan.
type Synapse struct {
	c    *matrix.Client // logged in as a server administrator
	http *http.Client
}

// NewSynapse returns the adapter for c's server; c's account must be a server administrator.
// hc makes the requests; nil means a client with a two-minute timeout.
func NewSynapse(c *matrix.Client, hc *http.Client) *Synapse {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return &Synapse{c: c, http: hc}
}

// ServerName returns the administrator's server.
func (s *Synapse) ServerName() string { return s.c.UserID().Homeserver() }

func (s *Synapse) userPath(version string, user id.UserID) string {
	return "/_synapse/admin/" + version + "/users/" + url.PathEscape(string(user))
}

// Logout deletes every device of user, and with them their access tokens.
func (s *Synapse) Logout(ctx context.Context, user id.UserID) error {
	if err := ownUser(s.ServerName(), ActionLogout, user); err != nil {
		return err
	}
	var list struct {
		Devices []struct {
			DeviceID id.DeviceID `json:"device_id"`
		} `json:"devices"`
	}
	path := s.userPath("v2", user) + "/devices"
	if err := adminCall(ctx, s.http, s.c, http.MethodGet, path, nil, &list); err != nil {
		return asCapability(err, s.ServerName(), ActionLogout, "Synapse admin API "+path)
	}
	ids := make([]id.DeviceID, 0, len(list.Devices))
	for _, d := range list.Devices {
		ids = append(ids, d.DeviceID)
	}
	for len(ids) > 0 {
		n := min(len(ids), synapseDeviceBatch)
		body := map[string]any{"devices": ids[:n]}
		if err := adminCall(ctx, s.http, s.c, http.MethodPost, s.userPath("v2", user)+"/delete_devices", body, nil); err != nil {
			return asCapability(err, s.ServerName(), ActionLogout, "Synapse admin API delete_devices")
		}
		ids = ids[n:]
	}
	return nil
}

// Evacuate is not offered by Synapse's admin API: a *CapabilityError. Deactivate makes the
// user leave every room.
func (s *Synapse) Evacuate(context.Context, id.UserID) error { return s.noEvacuate() }

func (s *Synapse) noEvacuate() *CapabilityError {
	return &CapabilityError{Server: s.ServerName(), Action: ActionEvacuate, Capability: "a Synapse admin endpoint to make a user leave every room",
		Detail: "deactivate does that"}
}

// Lock locks user's account.
func (s *Synapse) Lock(ctx context.Context, user id.UserID) error {
	if err := ownUser(s.ServerName(), ActionLock, user); err != nil {
		return err
	}
	err := adminCall(ctx, s.http, s.c, http.MethodPut, s.userPath("v2", user), map[string]any{"locked": true}, nil)
	return asCapability(err, s.ServerName(), ActionLock, "Synapse admin API PUT /_synapse/admin/v2/users (locked, Synapse 1.93)")
}

// Suspend suspends user's account.
func (s *Synapse) Suspend(ctx context.Context, user id.UserID) error {
	if err := ownUser(s.ServerName(), ActionSuspend, user); err != nil {
		return err
	}
	err := adminCall(ctx, s.http, s.c, http.MethodPut, "/_synapse/admin/v1/suspend/"+url.PathEscape(string(user)), map[string]any{"suspend": true}, nil)
	return asCapability(err, s.ServerName(), ActionSuspend, "Synapse admin API /_synapse/admin/v1/suspend")
}

// Deactivate deactivates user's account, erasing it with erase.
func (s *Synapse) Deactivate(ctx context.Context, user id.UserID, erase bool) error {
	if err := ownUser(s.ServerName(), ActionDeactivate, user); err != nil {
		return err
	}
	err := adminCall(ctx, s.http, s.c, http.MethodPost, "/_synapse/admin/v1/deactivate/"+url.PathEscape(string(user)), map[string]any{"erase": erase}, nil)
	return asCapability(err, s.ServerName(), ActionDeactivate, "Synapse admin API /_synapse/admin/v1/deactivate")
}

// Missing asks the server for its version (GET /_synapse/admin/v1/server_version): where the
// admin API does not answer, every action is missing. Evacuate is always missing.
func (s *Synapse) Missing(ctx context.Context, kinds []ActionKind) ([]*CapabilityError, error) {
	var out []*CapabilityError
	var v struct {
		Version string `json:"server_version"`
	}
	err := adminCall(ctx, s.http, s.c, http.MethodGet, "/_synapse/admin/v1/server_version", nil, &v)
	var ce *CapabilityError
	if errors.As(asCapability(err, s.ServerName(), "", ""), &ce) {
		for _, k := range kinds {
			out = append(out, &CapabilityError{Server: s.ServerName(), Action: k, Capability: "the Synapse admin API (/_synapse/admin)",
				Status: ce.Status, ErrCode: ce.ErrCode, Detail: "is it a Synapse, and is /_synapse/admin reachable from here?"})
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: Synapse admin API of %s: %w", s.ServerName(), err)
	}
	for _, k := range kinds {
		if k == ActionEvacuate {
			out = append(out, s.noEvacuate())
		}
	}
	return out, nil
}
