package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/samtalhq/samtal/federation"
)

// federation.list_url: the signed federation list fetched over HTTPS by a federation.Watcher,
// which the running gateway refreshes every federation.refresh (15 minutes by default). A
// newer version signed with federation.key_file replaces the list in use; a list that is
// refused (bad signature, older version, unreachable server) is logged and the last good one
// kept; federation.cache_file keeps the last good one across restarts. The gateway does not
// start without a list: the first fetch has to succeed, or the cache file hold one.

// memberList is what mailbridge.Options.Federation needs.
type memberList interface{ HasDomain(emailDomain string) bool }

// source is the configured federation list, from list_file or list_url, or nil for none.
func (f *federationConfig) source(log *slog.Logger) (memberList, error) {
	if f.ListURL == "" {
		for key, v := range map[string]string{"ca_file": f.CAFile, "cache_file": f.CacheFile} {
			if v != "" {
				return nil, fmt.Errorf("%w: federation.%s: only used with federation.list_url", errConfig, key)
			}
		}
		if f.Refresh != 0 {
			return nil, fmt.Errorf("%w: federation.refresh: only used with federation.list_url", errConfig)
		}
		ff, err := f.load(log)
		if ff == nil || err != nil {
			return nil, err
		}
		return ff, nil
	}
	return f.watch(log)
}

// federationURL is the list a federation.Watcher keeps. As with list_file, a list that has
// expired names no member.
type federationURL struct {
	w *federation.Watcher
}

// HasDomain reports whether emailDomain is a member agency's, by the list in use.
func (u *federationURL) HasDomain(emailDomain string) bool {
	l := u.w.Current()
	return l != nil && time.Now().Before(l.ExpiresAt()) && l.HasDomain(emailDomain)
}

// watch makes the Watcher of list_url, once per configuration. It does no network I/O.
func (f *federationConfig) watch(log *slog.Logger) (*federationURL, error) {
	if f.watcher != nil {
		return f.watcher, nil
	}
	if f.ListFile != "" {
		return nil, fmt.Errorf("%w: federation.list_url: list_file is set too; use one", errConfig)
	}
	u, err := url.Parse(f.ListURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: federation.list_url: %q is not an https URL such as https://federation.example/list.jws", errConfig, f.ListURL)
	}
	if f.KeyFile == "" {
		return nil, fmt.Errorf("%w: federation.key_file: needed with list_url, for the key the list is signed with", errConfig)
	}
	pem, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: federation.key_file: %w", errConfig, err)
	}
	key, err := federation.ParsePublicKey(pem)
	if err != nil {
		return nil, fmt.Errorf("%w: federation.key_file: %w", errConfig, err)
	}
	if f.Refresh < 0 {
		return nil, fmt.Errorf("%w: federation.refresh: must not be negative", errConfig)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: federation.ca_file: %w", errConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: federation.ca_file: no PEM certificate in %s", errConfig, f.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	w, err := federation.NewWatcher(f.ListURL, key, federation.Options{
		CacheFile:  f.CacheFile,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: tr},
		Refresh:    time.Duration(f.Refresh),
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: federation.list_url: %w", errConfig, err)
	}
	f.watcher = &federationURL{w: w}
	return f.watcher, nil
}

// firstFetch fetches list_url once before the gateway starts. It fails when that brings no
// list and the cache file has none either: members_only routes would refuse every sender.
func (f *federationConfig) firstFetch(ctx context.Context) error {
	if f.watcher == nil {
		return nil
	}
	err := f.watcher.w.Refresh(ctx)
	if err != nil && f.watcher.w.Current() == nil {
		return fmt.Errorf("%w: federation.list_url: no federation list to start with: %w", errConfig, err)
	}
	return nil // with a cached list, Refresh has logged why the fetched one was refused
}

// watchFederation keeps list_url's list fresh until bg ends.
func (rg *runningGateway) watchFederation(bg context.Context, cfg *gatewayConfig) {
	if f := cfg.Federation.watcher; f != nil {
		rg.bg.Go(func() { _ = f.w.Run(bg) })
	}
}
