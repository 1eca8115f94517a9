package identity

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// UserDirectory resolves through the own homeserver's user directory
// (/_matrix/client/v3/user_directory/search). The directory holds display names, not email
// addresses, so a user is a match when their display name is the address, or holds it in
// angle brackets ("Anna Berg <anna.berg@agency.se>"). Two such users are ErrAmbiguous.
//
// A server may list only the users who share a room with the account searching, or are in
// public rooms (Dendrite does so): the resolver finds no one else.
type UserDirectory struct {
	c *matrix.Client
}

// NewUserDirectory returns a resolver that searches c's homeserver's user directory.
func NewUserDirectory(c *matrix.Client) *UserDirectory { return &UserDirectory{c: c} }

// Name returns "user-directory".
func (u *UserDirectory) Name() string { return "user-directory" }

// Resolve searches for the address.
func (u *UserDirectory) Resolve(ctx context.Context, addr Address) (Match, error) {
	resp, err := u.c.Mautrix().SearchUserDirectory(ctx, addr.Key(), 50)
	if err != nil {
		return Match{}, fmt.Errorf("%w: user directory search: %w", ErrUnavailable, err)
	}
	var found []id.UserID
	for _, r := range resp.Results {
		// The spec names the field display_name here (displayname in profiles); mautrix
		// reads the latter and keeps the former in Extra.
		name := r.DisplayName
		if dn, ok := r.Extra["display_name"].(string); ok && name == "" {
			name = dn
		}
		if displayNameHolds(name, addr.Key()) {
			found = append(found, r.UserID)
		}
	}
	switch len(found) {
	case 0:
		return Match{}, fmt.Errorf("%w: no display name in the user directory holds %s", ErrNotFound, addr.Key())
	case 1:
		return Match{UserID: found[0], Detail: "display name in the user directory"}, nil
	}
	return Match{}, fmt.Errorf("%w: %s is in the display names of %d users", ErrAmbiguous, addr.Key(), len(found))
}

func displayNameHolds(name, addr string) bool {
	name = strings.ToLower(strings.TrimSpace(name))
	return name == addr || strings.Contains(name, "<"+addr+">")
}
