package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/samtalhq/samtal/matrix"
)

// The steps of Check, in the order they run for each server.
const (
	StepDiscovery       = "discovery"        // .well-known/matrix/server, SRV, port 8448: where the server listens
	StepTLS             = "tls"              // the certificate is valid for the name and not about to expire
	StepKeys            = "keys"             // /_matrix/key/v2/server is signed by a key it publishes
	StepVersion         = "version"          // /_matrix/federation/v1/version answers
	StepClientWellKnown = "client_wellknown" // /.well-known/matrix/client names a homeserver (a warning when missing)
	StepProfile         = "profile"          // our own server can query a profile over federation
)

// Why a step failed. Each is wrapped by StepResult.Err.
var (
	ErrUnreachable     = errors.New("federation check: server does not answer")
	ErrWrongCert       = errors.New("federation check: TLS certificate is not valid for the server name")
	ErrCertExpiring    = errors.New("federation check: TLS certificate expires soon")
	ErrUntrustedCert   = errors.New("federation check: TLS certificate is not trusted")
	ErrKeySignature    = errors.New("federation check: server keys are not signed by a key the server publishes")
	ErrBadKeys         = errors.New("federation check: server keys are malformed or expired")
	ErrBadResponse     = errors.New("federation check: unexpected answer")
	ErrNoWellKnown     = errors.New("federation check: no /.well-known/matrix/client")
	ErrProfileQuery    = errors.New("federation check: profile query over federation failed")
	ErrInvalidServerID = errors.New("federation check: not a valid server name")
)

// Status of a step.
type Status string

// The statuses of a step. Only StatusFail makes a server fail.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// StepResult is the outcome of one step for one server.
type StepResult struct {
	Step   string `json:"step"`
	Status Status `json:"status"`
	Detail string `json:"detail"` // what was found, or what went wrong
	Err    error  `json:"-"`      // with StatusFail or StatusWarn: wraps one of the Err* of the check
}

// ServerReport is the outcome of all steps for one server.
type ServerReport struct {
	Server   string        `json:"server"`
	Member   string        `json:"member,omitempty"`  // the agency, when the server is on the list
	Address  string        `json:"address,omitempty"` // host:port found by discovery
	OK       bool          `json:"ok"`
	Steps    []StepResult  `json:"steps"`
	Duration time.Duration `json:"duration_ns"`
}

// Failed returns the failed steps.
func (r ServerReport) Failed() []StepResult {
	var out []StepResult
	for _, s := range r.Steps {
		if s.Status == StatusFail {
			out = append(out, s)
		}
	}
	return out
}

// CheckOptions configure Check. The zero value checks as a server on the internet would, 64
// servers at a time, 10 seconds each, without the profile step.
type CheckOptions struct {
	Timeout     time.Duration  // for all steps of one server; 0 means 10 s
	Concurrency int            // servers checked at once; 0 means 64
	RootCAs     *x509.CertPool // trusted roots; nil means the system's
	// MinValidity is how long the certificate must still be valid; 0 means 14 days.
	MinValidity time.Duration
	// DialContext dials TCP; nil means a net.Dialer. Tests map names to loopback with it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// LookupSRV looks up SRV records; nil means net.DefaultResolver.LookupSRV.
	LookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// Client is an account on our own homeserver, for the profile step: our server queries
	// the profile of a user on the checked server over federation. nil skips the step.
	Client *matrix.Client
	// List names the members, for ServerReport.Member; optional.
	List *List
	Now  func() time.Time // nil means time.Now
}

// Check checks whether each of servers is ready to federate, all in parallel (bounded by
// Concurrency), each within Timeout, and returns one report per server in the order given.
// A server passes (OK) when no step failed; a missing client .well-known is a warning.
func Check(ctx context.Context, servers []string, opts CheckOptions) []ServerReport {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	if opts.MinValidity <= 0 {
		opts.MinValidity = 14 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DialContext == nil {
		opts.DialContext = (&net.Dialer{}).DialContext
	}
	if opts.LookupSRV == nil {
		opts.LookupSRV = net.DefaultResolver.LookupSRV
	}
	reports := make([]ServerReport, len(servers))
	sem := make(chan struct{}, opts.Concurrency)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				reports[i] = ServerReport{Server: s, Steps: []StepResult{{Step: StepDiscovery, Status: StatusFail, Detail: ctx.Err().Error(), Err: ctx.Err()}}}
				return
			}
			defer func() { <-sem }()
			reports[i] = checkServer(ctx, s, opts)
		}()
	}
	wg.Wait()
	return reports
}

// Passed reports whether every server passed.
func Passed(reports []ServerReport) bool {
	return !slices.ContainsFunc(reports, func(r ServerReport) bool { return !r.OK })
}

func checkServer(ctx context.Context, server string, opts CheckOptions) ServerReport {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	rep := ServerReport{Server: server}
	if m, ok := opts.List.MemberByServer(server); ok {
		rep.Member = m.Name
	}
	c := &checker{server: server, opts: opts}
	defer c.close()
	rep.Steps = c.run(ctx)
	rep.Address = c.dest
	rep.OK = !slices.ContainsFunc(rep.Steps, func(s StepResult) bool { return s.Status == StatusFail })
	rep.Duration = time.Since(start)
	return rep
}
