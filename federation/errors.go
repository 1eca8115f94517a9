package federation

import (
	"errors"
	"fmt"
)

// Why a list is refused. Each is wrapped by the error Load, Parse and Watcher.Refresh return,
// so callers branch with errors.Is; Reason names them for metrics.
var (
	// ErrSignature: the document is not a JWS signed by the configured key (tampered, signed
	// with another key, another algorithm than EdDSA or ES256, or not a JWS at all).
	ErrSignature = errors.New("federation: list signature does not verify")
	// ErrExpired: the list's expires_at has passed.
	ErrExpired = errors.New("federation: list expired")
	// ErrNotYetValid: the list's issued_at is in the future, beyond the allowed clock skew.
	ErrNotYetValid = errors.New("federation: list issued in the future")
	// ErrOlderVersion: the list's version is below the last good list's, or the same version
	// with other content. Versions only go up.
	ErrOlderVersion = errors.New("federation: list version is not newer than the last good list")
	// ErrTooLarge: the document, or its member count, is over the limit (Options.MaxSize,
	// Options.MaxMembers).
	ErrTooLarge = errors.New("federation: list too large")
	// ErrInvalidList: the signed document is not a valid list (bad JSON, missing fields,
	// malformed server names or domains, a domain or server named twice).
	ErrInvalidList = errors.New("federation: invalid list")
	// ErrUnavailable: the list could not be fetched (network error, non-200 answer).
	ErrUnavailable = errors.New("federation: list unavailable")
	// ErrNoList: no good list has been loaded yet, so nothing can be allowed.
	ErrNoList = errors.New("federation: no federation list loaded")
	// ErrInvalidAddress: an email address cannot be mapped to a Matrix ID by a member's rule.
	ErrInvalidAddress = errors.New("federation: address cannot be mapped to a Matrix ID")
)

// FetchError is a failed fetch of the list: the URL and, when the server answered, its status.
// It wraps ErrUnavailable.
type FetchError struct {
	URL    string
	Status int   // HTTP status; 0 when there was no answer
	Err    error // the transport error, if any
}

func (e *FetchError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("federation: fetch list %s: HTTP %d", e.URL, e.Status)
	}
	return fmt.Sprintf("federation: fetch list %s: %v", e.URL, e.Err)
}

// Unwrap returns ErrUnavailable and the transport error.
func (e *FetchError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Reason names why err refused a list, for a metric label: "signature", "expired",
// "not_yet_valid", "older_version", "too_large", "invalid", "unavailable", "no_list", or
// "other"; "" for nil.
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrSignature, "signature"}, {ErrExpired, "expired"}, {ErrNotYetValid, "not_yet_valid"},
		{ErrOlderVersion, "older_version"}, {ErrTooLarge, "too_large"}, {ErrInvalidList, "invalid"},
		{ErrUnavailable, "unavailable"}, {ErrNoList, "no_list"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	if err == nil {
		return ""
	}
	return "other"
}
