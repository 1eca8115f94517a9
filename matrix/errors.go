package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
)

// Sentinel errors that callers branch on with errors.Is. An *HTTPError from the homeserver
// matches the sentinel of its errcode.
var (
	ErrRateLimited  = errors.New("matrix: rate limited")             // M_LIMIT_EXCEEDED / HTTP 429
	ErrForbidden    = errors.New("matrix: forbidden")                // M_FORBIDDEN
	ErrNotFound     = errors.New("matrix: not found")                // M_NOT_FOUND, unknown room or alias
	ErrUnknownToken = errors.New("matrix: unknown or revoked token") // M_UNKNOWN_TOKEN, M_MISSING_TOKEN
	ErrTooLarge     = errors.New("matrix: too large")                // M_TOO_LARGE / HTTP 413
	ErrInvalidRoom  = errors.New("matrix: invalid room ID or alias") // rejected before any request is made
	ErrClosed       = errors.New("matrix: client closed")
	// ErrUnreachable is matched by errors that mean the homeserver could not be reached: a
	// refused or broken connection, a timeout, a name that does not resolve. The request may
	// or may not have arrived. The outbox keeps retrying such sends.
	ErrUnreachable = errors.New("matrix: homeserver unreachable")
	// ErrIdempotencyConflict is returned by Send and SendFile when an idempotency key comes
	// back with another room or other content than the send that first used it.
	ErrIdempotencyConflict = errors.New("matrix: idempotency key was used for another send")
)

// unreachableError is a transport failure: it matches ErrUnreachable and unwraps to the
// cause (a *url.Error, say).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string {
	return "matrix: homeserver unreachable: " + e.err.Error()
}
func (e *unreachableError) Unwrap() error { return e.err }

// Is makes errors.Is(err, ErrUnreachable) work.
func (e *unreachableError) Is(target error) bool { return target == ErrUnreachable }

// transportError reports whether err is a failure to reach the homeserver (no HTTP answer).
func transportError(err error) bool {
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &oe) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET)
}

// HTTPError is a homeserver's refusal of a request: the HTTP status and the Matrix errcode.
type HTTPError struct {
	Method     string
	Path       string
	Status     int
	ErrCode    string        // the Matrix errcode, such as M_FORBIDDEN; "" when the body had none
	Message    string        // the server's human-readable error
	RetryAfter time.Duration // from retry_after_ms or the Retry-After header, for rate limits
	SoftLogout bool          // with M_UNKNOWN_TOKEN: the session can be refreshed rather than lost
}

func (e *HTTPError) Error() string {
	code := e.ErrCode
	if code == "" {
		code = http.StatusText(e.Status)
	}
	return fmt.Sprintf("matrix: %s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, code, e.Message)
}

// Is makes errors.Is(err, ErrRateLimited) and the other sentinels work on an *HTTPError.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrRateLimited:
		return e.ErrCode == "M_LIMIT_EXCEEDED" || e.Status == http.StatusTooManyRequests
	case ErrForbidden:
		return e.ErrCode == "M_FORBIDDEN"
	case ErrNotFound:
		return e.ErrCode == "M_NOT_FOUND"
	case ErrUnknownToken:
		return e.ErrCode == "M_UNKNOWN_TOKEN" || e.ErrCode == "M_MISSING_TOKEN"
	case ErrTooLarge:
		return e.ErrCode == "M_TOO_LARGE" || e.Status == http.StatusRequestEntityTooLarge
	}
	return false
}

// Temporary reports whether the same request may succeed later: rate limits and server errors.
func (e *HTTPError) Temporary() bool {
	return e.Is(ErrRateLimited) || e.Status >= 500
}

// wrapErr turns mautrix's errors into ours: an *HTTPError where the server answered, an error
// matching ErrUnreachable where it could not be reached, the error unchanged otherwise (the
// context's error where it ended).
func wrapErr(err error) error {
	if err == nil {
		return nil
	}
	var mx mautrix.HTTPError
	if !errors.As(err, &mx) || mx.Response == nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			return err
		}
		if !errors.Is(err, ErrUnreachable) && transportError(err) {
			return &unreachableError{err}
		}
		return err
	}
	he := &HTTPError{Status: mx.Response.StatusCode, Message: mx.Message}
	if mx.Request != nil {
		he.Method, he.Path = mx.Request.Method, mx.Request.URL.Path
	}
	if re := mx.RespError; re != nil {
		he.ErrCode, he.Message = re.ErrCode, re.Err
		if ms, ok := re.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			he.RetryAfter = time.Duration(ms) * time.Millisecond
		}
		if soft, ok := re.ExtraData["soft_logout"].(bool); ok {
			he.SoftLogout = soft
		}
	}
	if he.RetryAfter == 0 {
		he.RetryAfter = parseRetryAfter(mx.Response.Header.Get("Retry-After"))
	}
	return he
}

// parseRetryAfter reads an HTTP Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// isTimeout reports whether err is a request timeout of the HTTP client (not the caller's
// context ending).
func isTimeout(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) && ue.Timeout()
}

// retryable reports whether a failed send should be tried again: rate limits, 5xx, and failures
// to reach the server. A cancelled context is not retryable, nor are 4xx other than 429 and
// content that is invalid.
func retryable(err error) bool {
	switch classify(err) {
	case failTemporary, failUnreachable:
		return true
	}
	return false
}
