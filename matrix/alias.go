package matrix

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// ResolveAlias returns the room alias points at; the error matches ErrNotFound when it points
// nowhere.
func (c *Client) ResolveAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	if err := ValidateAlias(alias); err != nil {
		return "", err
	}
	resp, err := c.mx.ResolveAlias(ctx, alias)
	if err != nil {
		return "", fmt.Errorf("matrix: resolve %s: %w", alias, wrapErr(err))
	}
	return resp.RoomID, nil
}

// SetAlias points alias, on the client's own server, at room. It fails if the alias points
// elsewhere already. It does not make it the room's canonical alias, which clients show.
func (c *Client) SetAlias(ctx context.Context, alias id.RoomAlias, room id.RoomID) error {
	if err := c.checkNewAlias(alias); err != nil {
		return err
	}
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	if _, err := c.mx.CreateAlias(ctx, alias, room); err != nil {
		return fmt.Errorf("matrix: set alias %s to %s: %w", alias, room, wrapErr(err))
	}
	return nil
}

// ValidateAlias checks that alias is syntactically a room alias, #localpart:server, before any
// request. It accepts any localpart other servers may have made; aliases this package creates
// must also follow the stricter grammar of RoomSpec.Alias.
func ValidateAlias(alias id.RoomAlias) error {
	s := string(alias)
	local, server := splitAlias(alias)
	if len(s) > 255 || !strings.HasPrefix(s, "#") || !utf8.ValidString(s) || local == "" ||
		strings.ContainsFunc(local, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) ||
		!id.ValidateServerName(server) {
		return fmt.Errorf("%w: %q is not a room alias (#localpart:server)", ErrInvalidRoom, alias)
	}
	return nil
}

// aliasLocalpart is the grammar of the aliases this package creates: that of user IDs, which
// every server and client handles, and which needs no escaping in matrix.to links.
var aliasLocalpart = regexp.MustCompile(`^[a-z0-9._=/-]+$`)

// checkNewAlias checks an alias the client is about to create: valid, in the strict grammar,
// and on the client's own server, the only one that lets it create aliases.
func (c *Client) checkNewAlias(alias id.RoomAlias) error {
	if err := ValidateAlias(alias); err != nil {
		return err
	}
	local, server := splitAlias(alias)
	if !aliasLocalpart.MatchString(local) {
		return fmt.Errorf("%w: alias %s: the localpart may hold only a-z, 0-9 and ._=-/", ErrInvalidRoom, alias)
	}
	if own := c.UserID().Homeserver(); server != own {
		return fmt.Errorf("%w: alias %s is not on %s, the server of %s, which is the only one that can create it", ErrInvalidRoom, alias, own, c.UserID())
	}
	return nil
}

// splitAlias returns the parts of #localpart:server.
func splitAlias(alias id.RoomAlias) (local, server string) {
	local, server, _ = strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	return local, server
}
