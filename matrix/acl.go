package matrix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ServerACL is a room's m.room.server_acl: which servers may take part in the room over
// federation. Servers are named by host, without port, and patterns may use * and ?. A server
// matching no Allow pattern, or any Deny pattern, is refused; so is an IP address unless
// AllowIPLiterals. An ACL concerns servers, not users: it does not remove anyone from the room,
// it makes the other servers refuse what a refused server sends.
type ServerACL struct {
	Allow           []string // host patterns, such as "matrix.agency.example" or "*.agency.example"; at least one
	Deny            []string // host patterns refused even when allowed
	AllowIPLiterals bool     // whether servers named by an IP address may take part
	// ManagedBy names what keeps this ACL current, such as "io.samtal.federation" (stored in
	// the event as "io.samtal.managed_by"). A reconciler changes only ACLs it manages.
	ManagedBy string
}

// ServerACLSource gives the ACL that every CaseRoom gets when its RoomSpec has none (see
// Options.CaseRoomACL), such as the one made from the agencies' federation list. An error
// fails the room's creation: a case room is never created open because the ACL was unknown.
type ServerACLSource interface {
	ServerACL() (*ServerACL, error)
}

// ServerACLFunc adapts a function to a ServerACLSource.
type ServerACLFunc func() (*ServerACL, error)

// ServerACL calls f.
func (f ServerACLFunc) ServerACL() (*ServerACL, error) { return f() }

// Limits on an ACL: its event travels with the room's state and must stay far below the 64 KiB
// event limit.
const (
	maxACLEntries = 1000
	maxACLPattern = 255
)

// serverACLContent is the event content, with the field that marks who manages it.
type serverACLContent struct {
	Allow           []string `json:"allow"`
	Deny            []string `json:"deny"`
	AllowIPLiterals bool     `json:"allow_ip_literals"`
	ManagedBy       string   `json:"io.samtal.managed_by,omitempty"`
}

func (a *ServerACL) content() *serverACLContent {
	c := &serverACLContent{Allow: a.Allow, Deny: a.Deny, AllowIPLiterals: a.AllowIPLiterals, ManagedBy: a.ManagedBy}
	if c.Allow == nil {
		c.Allow = []string{}
	}
	if c.Deny == nil {
		c.Deny = []string{}
	}
	return c
}

// ServerACL returns the server ACL of room, or an error wrapping ErrNotFound when the room has
// none (every server may take part).
func (c *Client) ServerACL(ctx context.Context, room id.RoomID) (*ServerACL, error) {
	if err := ValidateRoomID(room); err != nil {
		return nil, err
	}
	var content serverACLContent
	if err := c.mx.StateEvent(ctx, room, event.StateServerACL, "", &content); err != nil {
		return nil, fmt.Errorf("matrix: read server ACL of %s: %w", room, wrapErr(err))
	}
	return &ServerACL{Allow: content.Allow, Deny: content.Deny, AllowIPLiterals: content.AllowIPLiterals, ManagedBy: content.ManagedBy}, nil
}

// SetServerACL replaces the server ACL of room. acl is checked first: it must allow the
// client's own server, since a server shut out of a room can no longer change it.
func (c *Client) SetServerACL(ctx context.Context, room id.RoomID, acl ServerACL) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	if err := c.checkACL(&acl); err != nil {
		return err
	}
	if _, err := c.mx.SendStateEvent(ctx, room, event.StateServerACL, "", acl.content()); err != nil {
		return fmt.Errorf("matrix: set server ACL of %s: %w", room, wrapErr(err))
	}
	return nil
}

// AllowsServer reports whether the ACL lets server (a server name, with or without port) take
// part, by the rules of the Matrix specification.
func (a *ServerACL) AllowsServer(server string) bool {
	host := aclHost(server)
	if host == "" {
		return false
	}
	if !a.AllowIPLiterals && isIPLiteral(host) {
		return false
	}
	if slices.ContainsFunc(a.Deny, func(p string) bool { return globMatch(strings.ToLower(p), host) }) {
		return false
	}
	return slices.ContainsFunc(a.Allow, func(p string) bool { return globMatch(strings.ToLower(p), host) })
}

// checkACL reports what is wrong with acl, before any request.
func (c *Client) checkACL(acl *ServerACL) error {
	if len(acl.Allow) == 0 {
		return fmt.Errorf("%w: a server ACL must allow at least one server", ErrInvalidContent)
	}
	if len(acl.Allow)+len(acl.Deny) > maxACLEntries {
		return fmt.Errorf("%w: a server ACL has at most %d entries", ErrInvalidContent, maxACLEntries)
	}
	for _, p := range slices.Concat(acl.Allow, acl.Deny) {
		if p == "" || len(p) > maxACLPattern || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return fmt.Errorf("%w: server ACL pattern %q must be 1 to %d printable ASCII characters", ErrInvalidContent, p, maxACLPattern)
		}
	}
	if own := c.UserID().Homeserver(); !acl.AllowsServer(own) {
		return fmt.Errorf("%w: the server ACL shuts out the client's own server %s", ErrInvalidContent, own)
	}
	return nil
}

// caseRoomACL is the ACL a new room gets: the spec's own, else for a CaseRoom the configured
// source's.
func (c *Client) caseRoomACL(spec RoomSpec) (*ServerACL, error) {
	if spec.ServerACL != nil || spec.Preset != CaseRoom || c.aclSource == nil {
		return spec.ServerACL, nil
	}
	acl, err := c.aclSource.ServerACL()
	if err != nil {
		return nil, fmt.Errorf("matrix: the server ACL for a new case room: %w", err)
	}
	if acl == nil {
		return nil, errors.New("matrix: the server ACL source gave no ACL for a new case room")
	}
	return acl, nil
}

// aclHost is the host part of a server name, lower-cased and without port: what ACL patterns
// are matched against.
func aclHost(server string) string {
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	} else if strings.HasPrefix(server, "[") && strings.HasSuffix(server, "]") {
		host = server[1 : len(server)-1]
	}
	return strings.ToLower(host)
}

func isIPLiteral(host string) bool {
	return net.ParseIP(strings.Trim(host, "[]")) != nil
}

// globMatch matches s against a pattern of literal characters, * (any run) and ? (one
// character), over the whole of s.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	star, mark := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			star, mark = px, sx
			px++
		case star >= 0:
			px = star + 1
			mark++
			sx = mark
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}
