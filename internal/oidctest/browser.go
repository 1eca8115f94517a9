package oidctest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Browser is a user agent with a cookie jar that stops before following a redirect to a URL
// whose path is StopAt (so that a test can look at, replay or alter the callback).
type Browser struct {
	*http.Client
	StopAt string
}

// NewBrowser returns a Browser with an empty cookie jar.
func NewBrowser() *Browser {
	jar, _ := cookiejar.New(nil)
	b := &Browser{}
	b.Client = &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if b.StopAt != "" && req.URL.Path == b.StopAt {
			return http.ErrUseLastResponse
		}
		if len(via) > 20 {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

// LoginAtOP starts at start (an application's /login, or an authorization URL), signs in at
// the OP's login page as username and returns the last response: the application's answer,
// or the redirect to b.StopAt.
func (b *Browser) LoginAtOP(t testing.TB, start, username string) *http.Response {
	t.Helper()
	resp, err := b.SignIn(start, username)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// SignIn is LoginAtOP returning its error, for use outside the test's goroutine.
func (b *Browser) SignIn(start, username string) (*http.Response, error) {
	resp, err := b.Get(start)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	authID := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || authID == "" {
		return nil, fmt.Errorf("expected the OP's login page, got %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
	form := url.Values{"username": {username}, "password": {Password}, "id": {authID}}
	loginURL := *resp.Request.URL
	loginURL.RawQuery = ""
	return b.PostForm(loginURL.String(), form)
}

// CallbackURL is where a response stopped at b.StopAt would have gone.
func CallbackURL(t testing.TB, resp *http.Response) string {
	t.Helper()
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("expected a redirect to the callback, got %d: %v", resp.StatusCode, err)
	}
	return loc.String()
}

// Browse signs in at the OP as username, starting at an authorization URL, and follows the
// redirects to the end: a native client's loopback listener, which must confirm.
func Browse(start, username string) error {
	resp, err := NewBrowser().SignIn(start, username)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Signed in") {
		return fmt.Errorf("the loopback did not confirm: %d %q", resp.StatusCode, body)
	}
	return nil
}

// ApproveDevice enters userCode at the OP's device page as username and allows the grant.
func (o *OP) ApproveDevice(userCode, username string) error {
	b := NewBrowser()
	resp, err := b.PostForm(o.Issuer+"/device/login", url.Values{"user_code": {userCode}, "username": {username}, "password": {Password}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = b.PostForm(o.Issuer+"/device/confirm", url.Values{"action": {"allowed"}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("confirm: %d", resp.StatusCode)
	}
	return nil
}
