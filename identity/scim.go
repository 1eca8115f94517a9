package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// SCIM schema URNs (RFC 7643, RFC 7644).
const (
	scimUserSchema  = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimErrorSchema = "urn:ietf:params:scim:api:messages:2.0:Error"
	scimListSchema  = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
)

// maxSCIMBody bounds a SCIM request.
const maxSCIMBody = 1 << 20

// SCIMUser is the part of a SCIM User resource the handler keeps.
type SCIMUser struct {
	Schemas    []string    `json:"schemas"`
	ID         string      `json:"id"`
	ExternalID string      `json:"externalId,omitempty"`
	UserName   string      `json:"userName"`
	Active     bool        `json:"active"`
	Emails     []SCIMEmail `json:"emails,omitempty"`
	MatrixID   id.UserID   `json:"-"`
}

// SCIMEmail is one of a SCIM user's addresses.
type SCIMEmail struct {
	Value   string `json:"value"`
	Primary bool   `json:"primary,omitempty"`
}

// SCIMOptions configure a SCIM handler. Token and OnDeprovision are required.
type SCIMOptions struct {
	// Token is the bearer token the IdP sends; requests without it get 401.
	Token string
	// ServerName is the agency's server: a user's Matrix ID is @userName:ServerName unless
	// MapUser says otherwise.
	ServerName string
	// MapUser maps a SCIM user to the Matrix account; nil means the rule above.
	MapUser func(u SCIMUser) (id.UserID, error)
	// OnDeprovision is called when the IdP deactivates (active=false) or deletes a user, before
	// the request is answered: Reconciler.Offboard removes them at once. An error makes the
	// answer a 500, so that the IdP tries again.
	OnDeprovision func(ctx context.Context, user id.UserID, reason string) error
	Logger        *slog.Logger
}

// SCIM is an http.Handler for the /Users endpoint of SCIM 2.0 (RFC 7644) that an agency's IdP
// provisions to: POST creates, GET reads, PUT replaces, PATCH (active) updates, DELETE
// deprovisions. Deactivating or deleting a user offboards them at once through
// OnDeprovision. It is also a Source: Roster lists the users it holds.
//
// The users live in memory: after a restart the IdP's next full push (or the LDAP source) is
// the truth again; a deprovisioning is acted on before it is answered, so none is lost.
type SCIM struct {
	opts SCIMOptions
	log  *slog.Logger

	mu    sync.Mutex
	users map[string]*SCIMUser
}

// NewSCIM returns the handler. Mount it at the SCIM base URL: it serves /Users and /Users/{id}
// below the prefix it is given with http.StripPrefix, or at the root.
func NewSCIM(opts SCIMOptions) (*SCIM, error) {
	if opts.Token == "" || opts.OnDeprovision == nil {
		return nil, errors.New("identity: SCIM needs a Token and OnDeprovision")
	}
	if opts.MapUser == nil && opts.ServerName == "" {
		return nil, errors.New("identity: SCIM needs ServerName or MapUser")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &SCIM{opts: opts, log: log, users: map[string]*SCIMUser{}}, nil
}

// Name returns "scim".
func (s *SCIM) Name() string { return "scim" }

// Roster lists the users the IdP provisioned, active or not.
func (s *SCIM) Roster(context.Context) (Roster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Roster
	for _, u := range s.users {
		p := Person{UserID: u.MatrixID, Active: u.Active}
		if len(u.Emails) > 0 {
			p.Email = u.Emails[0].Value
		}
		if !u.Active {
			p.Reason = "deactivated through SCIM"
		}
		r.People = append(r.People, p)
	}
	return r, nil
}

// ServeHTTP serves /Users and /Users/{id}.
func (s *SCIM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.Token)) != 1 {
		scimError(w, http.StatusUnauthorized, "", "missing or wrong bearer token")
		return
	}
	path := strings.Trim(r.URL.Path, "/")
	rest, ok := strings.CutPrefix(path, "Users")
	if !ok || rest != "" && rest[0] != '/' {
		scimError(w, http.StatusNotFound, "", "only /Users is served")
		return
	}
	rid := strings.TrimPrefix(rest, "/")
	switch {
	case rid == "" && r.Method == http.MethodPost:
		s.create(w, r)
	case rid == "" && r.Method == http.MethodGet:
		s.list(w)
	case rid != "" && r.Method == http.MethodGet:
		s.get(w, rid)
	case rid != "" && r.Method == http.MethodPut:
		s.replace(w, r, rid)
	case rid != "" && r.Method == http.MethodPatch:
		s.patch(w, r, rid)
	case rid != "" && r.Method == http.MethodDelete:
		s.delete(w, r, rid)
	default:
		scimError(w, http.StatusMethodNotAllowed, "", r.Method+" is not allowed here")
	}
}

func (s *SCIM) create(w http.ResponseWriter, r *http.Request) {
	var u SCIMUser
	if !decodeSCIM(w, r, &u) {
		return
	}
	if u.UserName == "" {
		scimError(w, http.StatusBadRequest, "invalidValue", "userName is required")
		return
	}
	uid, err := s.mapUser(u)
	if err != nil {
		scimError(w, http.StatusBadRequest, "invalidValue", err.Error())
		return
	}
	s.mu.Lock()
	for _, other := range s.users {
		if other.UserName == u.UserName {
			s.mu.Unlock()
			scimError(w, http.StatusConflict, "uniqueness", "userName exists")
			return
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	u.ID, u.MatrixID, u.Schemas = hex.EncodeToString(b), uid, []string{scimUserSchema}
	s.users[u.ID] = &u
	out := u
	s.mu.Unlock()
	scimJSON(w, http.StatusCreated, out)
}

func (s *SCIM) list(w http.ResponseWriter) {
	s.mu.Lock()
	res := make([]SCIMUser, 0, len(s.users))
	for _, u := range s.users {
		res = append(res, *u)
	}
	s.mu.Unlock()
	scimJSON(w, http.StatusOK, map[string]any{"schemas": []string{scimListSchema}, "totalResults": len(res), "Resources": res})
}

func (s *SCIM) get(w http.ResponseWriter, rid string) {
	s.mu.Lock()
	u, ok := s.users[rid]
	var out SCIMUser
	if ok {
		out = *u
	}
	s.mu.Unlock()
	if !ok {
		scimError(w, http.StatusNotFound, "", "no such user")
		return
	}
	scimJSON(w, http.StatusOK, out)
}

func (s *SCIM) replace(w http.ResponseWriter, r *http.Request, rid string) {
	var u SCIMUser
	if !decodeSCIM(w, r, &u) {
		return
	}
	s.setActive(w, r, rid, u.Active, "deactivated through SCIM (PUT)")
}

func (s *SCIM) patch(w http.ResponseWriter, r *http.Request, rid string) {
	var req struct {
		Schemas    []string `json:"schemas"`
		Operations []struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		} `json:"Operations"`
	}
	if !decodeSCIM(w, r, &req) {
		return
	}
	if len(req.Operations) == 0 {
		scimError(w, http.StatusBadRequest, "invalidSyntax", "no Operations")
		return
	}
	active, set := true, false
	for _, op := range req.Operations {
		if !strings.EqualFold(op.Op, "replace") && !strings.EqualFold(op.Op, "add") {
			continue
		}
		var v any
		if err := json.Unmarshal(op.Value, &v); err != nil {
			scimError(w, http.StatusBadRequest, "invalidSyntax", "an operation's value is not JSON")
			return
		}
		if !strings.EqualFold(op.Path, "active") {
			m, ok := v.(map[string]any)
			if !ok || op.Path != "" {
				continue
			}
			if v, ok = m["active"]; !ok {
				continue
			}
		}
		b, ok := scimBool(v)
		if !ok {
			scimError(w, http.StatusBadRequest, "invalidValue", "active must be a boolean")
			return
		}
		active, set = b, true
	}
	if !set {
		s.get(w, rid)
		return
	}
	s.setActive(w, r, rid, active, "deactivated through SCIM (PATCH)")
}

// scimBool reads a boolean, which some IdPs (Entra ID) send as "False".
func scimBool(v any) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		switch strings.ToLower(b) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

func (s *SCIM) setActive(w http.ResponseWriter, r *http.Request, rid string, active bool, reason string) {
	s.mu.Lock()
	u, ok := s.users[rid]
	var uid id.UserID
	if ok {
		uid = u.MatrixID
	}
	s.mu.Unlock()
	if !ok {
		scimError(w, http.StatusNotFound, "", "no such user")
		return
	}
	// Deactivating twice offboards twice: harmless, since a second plan is empty.
	if !active {
		if err := s.opts.OnDeprovision(r.Context(), uid, reason); err != nil {
			s.log.Error("identity: SCIM deprovisioning failed", "user", uid, "err", err)
			scimError(w, http.StatusInternalServerError, "", "deprovisioning failed; try again")
			return
		}
	}
	s.mu.Lock()
	u.Active = active
	out := *u
	s.mu.Unlock()
	scimJSON(w, http.StatusOK, out)
}

func (s *SCIM) delete(w http.ResponseWriter, r *http.Request, rid string) {
	s.mu.Lock()
	u, ok := s.users[rid]
	s.mu.Unlock()
	if !ok {
		scimError(w, http.StatusNotFound, "", "no such user")
		return
	}
	if err := s.opts.OnDeprovision(r.Context(), u.MatrixID, "deleted through SCIM"); err != nil {
		s.log.Error("identity: SCIM deprovisioning failed", "user", u.MatrixID, "err", err)
		scimError(w, http.StatusInternalServerError, "", "deprovisioning failed; try again")
		return
	}
	s.mu.Lock()
	delete(s.users, rid)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *SCIM) mapUser(u SCIMUser) (id.UserID, error) {
	if s.opts.MapUser != nil {
		return s.opts.MapUser(u)
	}
	uid := id.NewUserID(strings.ToLower(u.UserName), s.opts.ServerName)
	if err := matrix.ValidateUserID(uid); err != nil {
		return "", fmt.Errorf("userName %q makes no Matrix ID", u.UserName)
	}
	return uid, nil
}

func decodeSCIM(w http.ResponseWriter, r *http.Request, into any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxSCIMBody))
	if err := dec.Decode(into); err != nil {
		scimError(w, http.StatusBadRequest, "invalidSyntax", "the body is not a JSON object of the expected form")
		return false
	}
	return true
}

func scimJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func scimError(w http.ResponseWriter, status int, scimType, detail string) {
	body := map[string]any{"schemas": []string{scimErrorSchema}, "status": fmt.Sprint(status), "detail": detail}
	if scimType != "" {
		body["scimType"] = scimType
	}
	scimJSON(w, status, body)
}
