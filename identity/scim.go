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

	"go.mau.fi/util/dbutil"
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

	// DB, the shared database (matrix.OpenDatabase), keeps the users in
	// samtal_identity_scim_user: a restart forgets none, and instances sharing a PostgreSQL
	// database serve the same users. nil keeps them in memory.
	DB *dbutil.Database
}

// SCIM is an http.Handler for the /Users endpoint of SCIM 2.0 (RFC 7644) that an agency's IdP
// provisions to: POST creates, GET reads, PUT replaces, PATCH (active) updates, DELETE
// deprovisions. Deactivating or deleting a user offboards them at once through
// OnDeprovision. It is also a Source: Roster lists the users it holds.
//
// The users live in SCIMOptions.DB, or in memory without one; either way a deprovisioning is
// acted on before it is answered, so none is lost.
type SCIM struct {
	opts  SCIMOptions
	log   *slog.Logger
	users scimStore
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
	var store scimStore = &memorySCIM{users: map[string]*SCIMUser{}}
	if opts.DB != nil {
		store = &dbSCIM{db: &offboardDB{raw: opts.DB}}
	}
	return &SCIM{opts: opts, log: log, users: store}, nil
}

// Name returns "scim".
func (s *SCIM) Name() string { return "scim" }

// Roster lists the users the IdP provisioned, active or not. A database that cannot be read
// is ErrSourceUnavailable.
func (s *SCIM) Roster(ctx context.Context) (Roster, error) {
	users, err := s.users.list(ctx)
	if err != nil {
		return Roster{}, fmt.Errorf("%w: %w", ErrSourceUnavailable, err)
	}
	var r Roster
	for _, u := range users {
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
		s.list(w, r)
	case rid != "" && r.Method == http.MethodGet:
		s.get(w, r, rid)
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
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	u.ID, u.MatrixID, u.Schemas = hex.EncodeToString(b), uid, []string{scimUserSchema}
	ok, err := s.users.create(r.Context(), &u)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	if !ok {
		scimError(w, http.StatusConflict, "uniqueness", "userName exists")
		return
	}
	scimJSON(w, http.StatusCreated, u)
}

// storeFailed answers 500 for a store that cannot be read or written: the IdP tries again.
func (s *SCIM) storeFailed(w http.ResponseWriter, err error) {
	s.log.Error("identity: SCIM store", "err", err)
	scimError(w, http.StatusInternalServerError, "", "the user store is unavailable; try again")
}

func (s *SCIM) list(w http.ResponseWriter, r *http.Request) {
	res, err := s.users.list(r.Context())
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	if res == nil {
		res = []SCIMUser{}
	}
	scimJSON(w, http.StatusOK, map[string]any{"schemas": []string{scimListSchema}, "totalResults": len(res), "Resources": res})
}

func (s *SCIM) get(w http.ResponseWriter, r *http.Request, rid string) {
	u, ok := s.lookup(w, r, rid)
	if !ok {
		return
	}
	scimJSON(w, http.StatusOK, u)
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
		s.get(w, r, rid)
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
	u, ok := s.lookup(w, r, rid)
	if !ok {
		return
	}
	// Deactivating twice offboards twice: harmless, since a second plan is empty.
	if !active {
		if !s.deprovision(w, r, u.MatrixID, reason) {
			return
		}
	}
	out, err := s.users.setActive(r.Context(), rid, active)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	if out == nil { // deleted meanwhile
		scimError(w, http.StatusNotFound, "", "no such user")
		return
	}
	scimJSON(w, http.StatusOK, out)
}

func (s *SCIM) delete(w http.ResponseWriter, r *http.Request, rid string) {
	u, ok := s.lookup(w, r, rid)
	if !ok {
		return
	}
	if !s.deprovision(w, r, u.MatrixID, "deleted through SCIM") {
		return
	}
	if err := s.users.remove(r.Context(), rid); err != nil {
		s.storeFailed(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// lookup finds the user rid for get, PUT, PATCH and DELETE; for none (404) or a store that
// cannot be read (500) it answers the request itself and reports false.
func (s *SCIM) lookup(w http.ResponseWriter, r *http.Request, rid string) (*SCIMUser, bool) {
	u, err := s.users.get(r.Context(), rid)
	if err != nil {
		s.storeFailed(w, err)
		return nil, false
	}
	if u == nil {
		scimError(w, http.StatusNotFound, "", "no such user")
		return nil, false
	}
	return u, true
}

// deprovision runs OnDeprovision for user; when it fails it answers 500 (the IdP tries again)
// and reports false.
func (s *SCIM) deprovision(w http.ResponseWriter, r *http.Request, user id.UserID, reason string) bool {
	if err := s.opts.OnDeprovision(r.Context(), user, reason); err != nil {
		s.log.Error("identity: SCIM deprovisioning failed", "user", user, "err", err)
		scimError(w, http.StatusInternalServerError, "", "deprovisioning failed; try again")
		return false
	}
	return true
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
