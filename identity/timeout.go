package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrTimeout: a server (the OpenID provider, the homeserver or its authorization server)
// took the request and did not answer within the request timeout (ProviderOptions.Timeout,
// OAuthOptions.HTTPTimeout, TransportOptions.Timeout). It is an outage, not a refusal: try
// again later.
var ErrTimeout = errors.New("identity: the server did not answer in time")

// withTimeout copies c with its Timeout at most d, so that no request through it, with or
// without a deadline of its caller, waits longer.
func withTimeout(c *http.Client, d time.Duration) *http.Client {
	cc := *c
	if cc.Timeout == 0 || cc.Timeout > d {
		cc.Timeout = d
	}
	return &cc
}

// isTimeout reports whether err is a request that ran out of its own time, not one whose
// caller gave up (ctx, the caller's context, is still live).
func isTimeout(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// timeoutError is ErrTimeout for step, which did not answer within d.
func timeoutError(step string, d time.Duration) error {
	return fmt.Errorf("%w: %s: no answer within %s", ErrTimeout, step, d)
}

// call runs one request of step with its own deadline d under ctx. A request that runs out
// of d gives ErrTimeout; other errors are returned as f returned them.
func call[T any](ctx context.Context, d time.Duration, step string, f func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := f(cctx)
	if err != nil && isTimeout(ctx, err) {
		return v, timeoutError(step, d)
	}
	return v, err
}
