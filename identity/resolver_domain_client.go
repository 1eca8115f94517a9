package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ClientAPI finds the client API base URL an agency publishes for its server name in
// https://HOST/.well-known/matrix/client (the spec's client discovery, HOST being the server
// name without its port), and checks that it answers /_matrix/client/versions. It returns ""
// where nothing is published (404, or no web server for the name, or an IP literal). A
// broken document, a redirect to another host, a base URL that is no Matrix client API: an
// error matching ErrWellKnown. A timeout: ErrUnavailable.
func (r *DomainResolver) ClientAPI(ctx context.Context, server string) (string, error) {
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return "", nil
	}
	doc := "https://" + host + "/.well-known/matrix/client"
	body, status, err := r.fetchSameHost(ctx, doc, host)
	if err != nil {
		return "", err
	}
	if status == http.StatusNotFound || status == 0 {
		return "", nil
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("%w: %s answered HTTP %d", ErrWellKnown, doc, status)
	}
	var wk struct {
		Homeserver *struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	if err := json.Unmarshal(body, &wk); err != nil {
		return "", fmt.Errorf("%w: %s is not JSON: %v", ErrWellKnown, doc, err)
	}
	if wk.Homeserver == nil || wk.Homeserver.BaseURL == "" {
		return "", fmt.Errorf("%w: %s has no m.homeserver.base_url", ErrWellKnown, doc)
	}
	base := strings.TrimRight(wk.Homeserver.BaseURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: %s: base_url %q is not an http(s) URL", ErrWellKnown, doc, wk.Homeserver.BaseURL)
	}
	versions := base + "/_matrix/client/versions"
	body, status, err = r.fetchSameHost(ctx, versions, u.Hostname())
	if err != nil {
		return "", err
	}
	var v struct {
		Versions []string `json:"versions"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &v) != nil || len(v.Versions) == 0 {
		return "", fmt.Errorf("%w: %s names %s, which is no Matrix client API (/versions: HTTP %d)", ErrWellKnown, doc, base, status)
	}
	return base, nil
}

// fetchSameHost GETs url, following redirects only within host, and returns the body (up to
// maxWellKnown) and status; status 0 with no error means no web server answered.
func (r *DomainResolver) fetchSameHost(ctx context.Context, url, host string) ([]byte, int, error) {
	hc := *r.http
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Hostname() != host || len(via) > 3 {
			return fmt.Errorf("%w: %s redirects to %s", ErrWellKnown, url, req.URL.Host)
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrWellKnown, url, err)
	}
	resp, err := hc.Do(req)
	switch {
	case errors.Is(err, ErrWellKnown):
		return nil, 0, err
	case isTimeout(context.Background(), err):
		return nil, 0, fmt.Errorf("%w: %s timed out", ErrUnavailable, url)
	case err != nil && ctx.Err() != nil:
		return nil, 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, url, ctx.Err())
	case err != nil:
		return nil, 0, nil // no web server for the name: nothing published
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWellKnown+1))
	if isTimeout(context.Background(), err) {
		return nil, 0, fmt.Errorf("%w: reading %s timed out", ErrUnavailable, url)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read %s: %w", ErrUnavailable, url, err)
	}
	if len(body) > maxWellKnown {
		return nil, 0, fmt.Errorf("%w: %s is over %d bytes", ErrWellKnown, url, maxWellKnown)
	}
	return body, resp.StatusCode, nil
}
