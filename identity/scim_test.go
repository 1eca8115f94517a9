package identity_test

import (
	"encoding/json"
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
