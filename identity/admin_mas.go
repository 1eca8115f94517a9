package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"maunium.net/go/mautrix/id"
)

// masAdminScope is the scope MAS requires of its admin API's tokens.
const masAdminScope = "urn:mas:admin"

// masPage is how many items one page of a MAS list asks for.
const masPage = 100

// masSessionKinds are the session lists of a user in MAS, each finished with
// POST /api/admin/v1/{kind}/{id}/finish: Matrix clients that logged in the old way, OAuth 2.0
// clients, and browser sessions at MAS itself.
var masSessionKinds = []string{"compat-sessions", "oauth2-sessions", "user-sessions"}

// MASOptions configure the MAS adapter. URL, ClientID, ClientSecret and ServerName are
// required.
type MASOptions struct {
	URL          string // MAS's base URL, such as https://auth.agency-a.se
	ClientID     string // a client listed in MAS's policy.data.admin_clients
	ClientSecret string // its secret (client_secret_basic)
	TokenURL     string // "" means URL + /oauth2/token
	ServerName   string // the Matrix server whose accounts MAS manages
	HTTPClient   *http.Client
}

// MAS is the Admin adapter for matrix-authentication-service, where an agency's homeserver
// delegates its accounts and sessions to MAS. It uses MAS's admin API (/api/admin/v1) with a
// token from the OAuth 2.0 client credentials grant (scope urn:mas:admin), and finds a Matrix
// user by their localpart (GET /api/admin/v1/users/by-username/{username}):
//
//   - Logout finishes every active session of the user: compatibility sessions, OAuth 2.0
//     sessions and browser sessions, page by page;
//   - Lock: POST /api/admin/v1/users/{id}/lock;
//   - Deactivate: POST /api/admin/v1/users/{id}/deactivate (skip_erase unless erase), which
//     also has the homeserver make the user leave every room.
//
// MAS has no suspension and manages no rooms: Suspend and Evacuate are *CapabilityError.
type MAS struct {
	opts MASOptions
	base string
	http *http.Client
	ts   oauth2.TokenSource
}

// NewMAS returns the adapter. No request is made until it is used.
func NewMAS(opts MASOptions) (*MAS, error) {
	if opts.URL == "" || opts.ClientID == "" || opts.ClientSecret == "" || opts.ServerName == "" {
		return nil, errors.New("identity: MAS needs URL, ClientID, ClientSecret and ServerName")
	}
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("identity: MAS URL %q is not an http(s) URL", opts.URL)
	}
	base := strings.TrimRight(opts.URL, "/")
	if opts.TokenURL == "" {
		opts.TokenURL = base + "/oauth2/token"
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	cc := &clientcredentials.Config{ClientID: opts.ClientID, ClientSecret: opts.ClientSecret, TokenURL: opts.TokenURL,
		Scopes: []string{masAdminScope}, AuthStyle: oauth2.AuthStyleInHeader}
	// The token source outlives any one call's context: it only carries the HTTP client.
	ts := cc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, hc))
	return &MAS{opts: opts, base: base, http: hc, ts: ts}, nil
}

// ServerName returns the Matrix server whose accounts MAS manages.
func (m *MAS) ServerName() string { return m.opts.ServerName }

// call makes an admin API request with a fresh token.
func (m *MAS) call(ctx context.Context, method, path string, in, out any) error {
	tok, err := m.ts.Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// The token endpoint's answer, without the body (which may echo the request).
			status := 0
			if re.Response != nil {
				status = re.Response.StatusCode
			}
			return &AdminError{Method: http.MethodPost, Path: "(MAS token endpoint)", Status: status, ErrCode: re.ErrorCode,
				Message: "client credentials grant refused"}
		}
		// Such as the token endpoint unreachable: the error names its URL, never the secret.
		return fmt.Errorf("identity: MAS admin token: %w", err)
	}
	return adminRequest(ctx, m.http, m.base, tok.AccessToken, method, "/api/admin/v1"+path, in, out)
}

// masResource is one resource of a JSON:API document as MAS answers.
type masResource struct {
	ID         string `json:"id"`
	Attributes struct {
		Username      string  `json:"username"`
		LockedAt      *string `json:"locked_at"`
		DeactivatedAt *string `json:"deactivated_at"`
		FinishedAt    *string `json:"finished_at"`
	} `json:"attributes"`
}

// userID finds the MAS user ID of a Matrix user.
func (m *MAS) userID(ctx context.Context, k ActionKind, user id.UserID) (string, error) {
	if err := ownUser(m.ServerName(), k, user); err != nil {
		return "", err
	}
	local, _, _ := strings.Cut(strings.TrimPrefix(string(user), "@"), ":")
	var doc struct {
		Data *masResource `json:"data"`
	}
	err := m.call(ctx, http.MethodGet, "/users/by-username/"+url.PathEscape(local), nil, &doc)
	var ae *AdminError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Message == "" {
		// A 404 that is no JSON:API error document: the admin API is not served there.
		return "", &CapabilityError{Server: m.base, Action: k, Capability: "the MAS admin API (the adminapi resource of an HTTP listener)", Status: ae.Status}
	}
	if err != nil {
		return "", err
	}
	if doc.Data == nil || doc.Data.ID == "" {
		return "", fmt.Errorf("identity: MAS answered no user for %s", user)
	}
	return doc.Data.ID, nil
}

// Logout finishes every active session of user in MAS.
func (m *MAS) Logout(ctx context.Context, user id.UserID) error {
	uid, err := m.userID(ctx, ActionLogout, user)
	if err != nil {
		return err
	}
	for _, kind := range masSessionKinds {
		if err := m.finishAll(ctx, kind, uid); err != nil {
			return err
		}
	}
	return nil
}

// finishAll finishes the active sessions of one kind, following the list's cursor. A session
// finished meanwhile (400: already finished) is not an error.
func (m *MAS) finishAll(ctx context.Context, kind, uid string) error {
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			return fmt.Errorf("identity: MAS lists over a million %s of one user", kind)
		}
		q := url.Values{"filter[user]": {uid}, "filter[status]": {"active"}, "page[first]": {fmt.Sprint(masPage)}, "count": {"false"}}
		if after != "" {
			q.Set("page[after]", after)
		}
		var doc struct {
			Data  []masResource `json:"data"`
			Links struct {
				Next string `json:"next"`
			} `json:"links"`
		}
		if err := m.call(ctx, http.MethodGet, "/"+kind+"?"+q.Encode(), nil, &doc); err != nil {
			return fmt.Errorf("identity: list the %s of a MAS user: %w", kind, err)
		}
		for _, s := range doc.Data {
			err := m.call(ctx, http.MethodPost, "/"+kind+"/"+url.PathEscape(s.ID)+"/finish", nil, nil)
			var ae *AdminError
			if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
				continue // finished meanwhile
			}
			if err != nil {
				return fmt.Errorf("identity: finish a MAS %s: %w", strings.TrimSuffix(kind, "s"), err)
			}
		}
		if doc.Links.Next == "" || len(doc.Data) == 0 {
			return nil
		}
		after = doc.Data[len(doc.Data)-1].ID
	}
}

// Evacuate is not offered by MAS, which manages no rooms: a *CapabilityError.
func (m *MAS) Evacuate(context.Context, id.UserID) error { return m.lacks(ActionEvacuate) }

// Suspend is not offered by MAS: a *CapabilityError.
func (m *MAS) Suspend(context.Context, id.UserID) error { return m.lacks(ActionSuspend) }

func (m *MAS) lacks(k ActionKind) *CapabilityError {
	detail := "lock or deactivate instead"
	if k == ActionEvacuate {
		detail = "deactivate makes the homeserver remove the user from every room"
	}
	return &CapabilityError{Server: m.base, Action: k, Capability: "a MAS admin endpoint to " + string(k), Detail: detail}
}

// Lock locks user's account in MAS.
func (m *MAS) Lock(ctx context.Context, user id.UserID) error {
	uid, err := m.userID(ctx, ActionLock, user)
	if err != nil {
		return err
	}
	return m.call(ctx, http.MethodPost, "/users/"+url.PathEscape(uid)+"/lock", nil, nil)
}

// Deactivate deactivates user's account in MAS; without erase MAS is asked to skip the
// homeserver's erasure.
func (m *MAS) Deactivate(ctx context.Context, user id.UserID, erase bool) error {
	uid, err := m.userID(ctx, ActionDeactivate, user)
	if err != nil {
		return err
	}
	return m.call(ctx, http.MethodPost, "/users/"+url.PathEscape(uid)+"/deactivate", map[string]any{"skip_erase": !erase}, nil)
}

// Missing checks that the admin API answers (a token is granted, and the user list is
// served); Suspend and Evacuate are always missing.
func (m *MAS) Missing(ctx context.Context, kinds []ActionKind) ([]*CapabilityError, error) {
	err := m.call(ctx, http.MethodGet, "/users?page[first]=1&count=false", nil, nil)
	var ae *AdminError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
		var out []*CapabilityError
		for _, k := range kinds {
			out = append(out, &CapabilityError{Server: m.base, Action: k, Capability: "the MAS admin API (the adminapi resource of an HTTP listener)", Status: ae.Status})
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: MAS admin API at %s: %w", m.base, err)
	}
	var out []*CapabilityError
	for _, k := range kinds {
		if k == ActionSuspend || k == ActionEvacuate {
			out = append(out, m.lacks(k))
		}
	}
	return out, nil
}
