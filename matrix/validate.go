package matrix

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// ErrInvalidUserID is wrapped by the error for a malformed user ID, returned before any
// request is made.
var ErrInvalidUserID = errors.New("matrix: invalid user ID")

// ValidateUserID checks that u is syntactically a user ID, @localpart:server, before any
// request. It accepts the historical localparts that older servers allowed.
func ValidateUserID(u id.UserID) error {
	local, _, err := u.ParseAndValidateRelaxed()
	if err == nil && (local == "" || strings.ContainsFunc(local, func(r rune) bool { return r <= ' ' || r > '~' })) {
		err = errors.New("localpart must be printable ASCII")
	}
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidUserID, u, err)
	}
	return nil
}

// checkRoomUser checks the arguments of the membership methods.
func checkRoomUser(room id.RoomID, user id.UserID) error {
	if err := ValidateRoomID(room); err != nil {
		return err
	}
	return ValidateUserID(user)
}

// ValidateRoomID checks that room is syntactically a room ID (not an alias), before any request.
func ValidateRoomID(room id.RoomID) error {
	s := string(room)
	if len(s) < 2 || s[0] != '!' || len(s) > 255 || !utf8.ValidString(s) || strings.ContainsAny(s, " \t\r\n\x00/") {
		return fmt.Errorf("%w: %q is not a room ID", ErrInvalidRoom, room)
	}
	return nil
}
