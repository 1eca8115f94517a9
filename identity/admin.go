package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"
)

// AccountAdmin is an Admin that can also lock, suspend and deactivate accounts: what the
// Reconciler does with ReconcileOptions.Lock, Suspend and Deactivate. A method the server has
// no API for returns a *CapabilityError.
type AccountAdmin interface {
	Admin
	// Lock keeps user from using the account: every request with their tokens is refused
	// (M_USER_LOCKED) and they cannot log in again, until an administrator unlocks them.
	Lock(ctx context.Context, user id.UserID) error
	// Suspend makes the account read-only: no messages, joins or invites.
	Suspend(ctx context.Context, user id.UserID) error
	// Deactivate closes the account for good; with erase the server also forgets the
	// profile and hides the messages from people who join later (GDPR erasure).
	Deactivate(ctx context.Context, user id.UserID, erase bool) error
}

// CapabilityChecker is an Admin that can say, before a plan is made, which actions its server
// does not offer. The Reconciler leaves those out of the plan and lists them in
// Plan.Missing.
type CapabilityChecker interface {
	// Missing returns a *CapabilityError for each of kinds the server does not offer, and an
	// error when it cannot find out.
	Missing(ctx context.Context, kinds []ActionKind) ([]*CapabilityError, error)
}

// CapabilityError says which capability an admin adapter's server lacks for an action: the
// endpoint answered M_UNRECOGNIZED or 404, its capability is not advertised, or the API has
// no such operation. It matches ErrAdminUnsupported.
type CapabilityError struct {
	Server     string     `json:"server"`            // the homeserver (or MAS) acted on
	Action     ActionKind `json:"action"`            // what was asked
	Capability string     `json:"capability"`        // what is missing, such as "m.account_moderation.lock"
	Status     int        `json:"status,omitempty"`  // the HTTP status of the answer that told, if any
	ErrCode    string     `json:"errcode,omitempty"` // its errcode, if any
	Detail     string     `json:"detail,omitempty"`  // what to do instead, if anything
}

func (e *CapabilityError) Error() string {
	s := fmt.Sprintf("identity: %s cannot %s: missing %s", e.Server, e.Action, e.Capability)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d %s)", e.Status, e.ErrCode)
	}
	if e.Detail != "" {
		s += "; " + e.Detail
	}
	return s
}

// Is makes a CapabilityError match ErrAdminUnsupported.
func (e *CapabilityError) Is(target error) bool { return target == ErrAdminUnsupported }

// asCapability turns an admin API's answer that the endpoint is not there (M_UNRECOGNIZED, or
// 404/405 without a Matrix errcode) into a *CapabilityError; other errors pass unchanged.
func asCapability(err error, server string, kind ActionKind, capability string) error {
	var ae *AdminError
	if !errors.As(err, &ae) {
		return err
	}
	unrecognized := ae.ErrCode == "M_UNRECOGNIZED" ||
		(ae.ErrCode == "" && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed))
	if !unrecognized {
		return err
	}
	return &CapabilityError{Server: server, Action: kind, Capability: capability, Status: ae.Status, ErrCode: ae.ErrCode}
}

// adminKinds are the actions an admin adapter carries out, in the order of a plan.
var adminKinds = []ActionKind{ActionLogout, ActionEvacuate, ActionLock, ActionSuspend, ActionDeactivate}

// maxAdminAnswer bounds an admin API's answer.
const maxAdminAnswer = 4 << 20

// adminRequest makes a request to an admin API at base with a bearer token. The token goes in
// the header only; no error text holds it or the request body. Errors from the API are
// *AdminError, with the Matrix errcode where the answer has one (or the first error title of
// a JSON:API error document, as MAS answers).
func adminRequest(ctx context.Context, hc *http.Client, base, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("identity: admin API %s %s: %w", method, req.URL.Path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxAdminAnswer))
	if resp.StatusCode/100 != 2 {
		ae := &AdminError{Method: method, Path: req.URL.Path, Status: resp.StatusCode}
		var e struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
			Errors  []struct {
				Title string `json:"title"`
			} `json:"errors"`
		}
		if json.Unmarshal(data, &e) == nil {
			ae.ErrCode, ae.Message = e.ErrCode, e.Error
			if ae.Message == "" && len(e.Errors) > 0 {
				ae.Message = e.Errors[0].Title
			}
		}
		return ae
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("identity: admin API %s %s: answer is not JSON: %w", method, req.URL.Path, err)
		}
	}
	return nil
}

// ownUser refuses a user of another server than the adapter's.
func ownUser(server string, kind ActionKind, user id.UserID) error {
	if serverOf(user) != server {
		return fmt.Errorf("%w: %s %s: not on %s", ErrAdminUnsupported, kind, user, server)
	}
	return nil
}
