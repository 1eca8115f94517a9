package identity_test

import (
	"context"
	"errors"
	"net/http/httptest"

	"maunium.net/go/mautrix/id"

	"encoding/json"
	"github.com/samtalhq/samtal/identity"
	"io"
	"net/http"
	"strings"
	"testing"
)

func scimDo(t *testing.T, base, token, method, path, body string, wantStatus int) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/scim+json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, wantStatus)
	}
	out := map[string]any{}
	_ = json.Unmarshal(data, &out)
	return out
}

// TestSCIMBadInput: a wrong or missing token, malformed JSON, an unknown user or a bad value
// is a clear SCIM error, and nobody is deprovisioned.
func TestSCIMBadInput(t *testing.T) {
	var deprovisioned []string
	scim, err := identity.NewSCIM(identity.SCIMOptions{Token: "right-token", ServerName: "agency-a.test",
		OnDeprovision: func(_ context.Context, u id.UserID, _ string) error {
			deprovisioned = append(deprovisioned, string(u))
			return nil
		}})
	must(t, err)
	srv := httptest.NewServer(scim)
	defer srv.Close()
	created := scimDo(t, srv.URL, "right-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusCreated)
	rid := created["id"].(string)
	patchOff := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`

	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
	}{
		{"no token", "", http.MethodPatch, "/Users/" + rid, patchOff, http.StatusUnauthorized},
		{"wrong token", "wrong-token", http.MethodPatch, "/Users/" + rid, patchOff, http.StatusUnauthorized},
		{"wrong token, delete", "wrong-token", http.MethodDelete, "/Users/" + rid, "", http.StatusUnauthorized},
		{"malformed JSON", "right-token", http.MethodPatch, "/Users/" + rid, `{"Operations":[{"op":"replace",`, http.StatusBadRequest},
		{"not an object", "right-token", http.MethodPatch, "/Users/" + rid, `[1,2]`, http.StatusBadRequest},
		{"no operations", "right-token", http.MethodPatch, "/Users/" + rid, `{"Operations":[]}`, http.StatusBadRequest},
		{"active not a boolean", "right-token", http.MethodPatch, "/Users/" + rid, `{"Operations":[{"op":"replace","path":"active","value":"maybe"}]}`, http.StatusBadRequest},
		{"unknown user", "right-token", http.MethodPatch, "/Users/nobody", patchOff, http.StatusNotFound},
		{"unknown user, delete", "right-token", http.MethodDelete, "/Users/nobody", "", http.StatusNotFound},
		{"unknown user, get", "right-token", http.MethodGet, "/Users/nobody", "", http.StatusNotFound},
		{"unknown user, put", "right-token", http.MethodPut, "/Users/nobody", `{"userName":"nobody","active":false}`, http.StatusNotFound},
		{"bad userName", "right-token", http.MethodPost, "/Users", `{"userName":"Anna Berg!","active":true}`, http.StatusBadRequest},
		{"duplicate userName", "right-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusConflict},
		{"other endpoint", "right-token", http.MethodGet, "/Groups", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := scimDo(t, srv.URL, tc.token, tc.method, tc.path, tc.body, tc.status)
			if schemas, _ := out["schemas"].([]any); len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" {
				t.Errorf("answer %v is not a SCIM error", out)
			}
		})
	}
	if len(deprovisioned) != 0 {
		t.Fatalf("deprovisioned %v after bad requests", deprovisioned)
	}
	// Entra ID sends "False" as a string, and without a path.
	scimDo(t, srv.URL, "right-token", http.MethodPatch, "/Users/"+rid, `{"Operations":[{"op":"Replace","value":{"active":"False"}}]}`, http.StatusOK)
	scimDo(t, srv.URL, "right-token", http.MethodDelete, "/Users/"+rid, "", http.StatusNoContent)
	if len(deprovisioned) != 2 || deprovisioned[0] != "@anna:agency-a.test" {
		t.Fatalf("deprovisioned %v, want anna twice (PATCH, DELETE)", deprovisioned)
	}
}

// TestSCIMDeprovisionFails: when offboarding fails, a deactivating PATCH or PUT and a DELETE
// answer 500 (the IdP tries again), and the user stays as it was.
func TestSCIMDeprovisionFails(t *testing.T) {
	scim, err := identity.NewSCIM(identity.SCIMOptions{Token: "right-token", ServerName: "agency-a.test",
		OnDeprovision: func(context.Context, id.UserID, string) error { return errors.New("homeserver unavailable") }})
	must(t, err)
	srv := httptest.NewServer(scim)
	defer srv.Close()
	rid := scimDo(t, srv.URL, "right-token", http.MethodPost, "/Users", `{"userName":"anna","active":true}`, http.StatusCreated)["id"].(string)
	patchOff := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`
	scimDo(t, srv.URL, "right-token", http.MethodPatch, "/Users/"+rid, patchOff, http.StatusInternalServerError)
	scimDo(t, srv.URL, "right-token", http.MethodPut, "/Users/"+rid, `{"userName":"anna","active":false}`, http.StatusInternalServerError)
	scimDo(t, srv.URL, "right-token", http.MethodDelete, "/Users/"+rid, "", http.StatusInternalServerError)
	if u := scimDo(t, srv.URL, "right-token", http.MethodGet, "/Users/"+rid, "", http.StatusOK); u["active"] != true {
		t.Errorf("after failed offboarding the user is %v, want still active", u)
	}
}
