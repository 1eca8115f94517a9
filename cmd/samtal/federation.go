package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/internal/storage"
)

// runFederation is `samtal federation check|list|sign|keygen`: the agencies' federation list
// and whether its servers are ready to federate.
func runFederation(ctx context.Context, e *env, args []string) error {
	const synopsis = "federation check|list|sign|keygen [flags] [arguments]"
	const details = `check [SERVER...]   is each server ready to federate? (default: every member of the list)
                    discovery, TLS certificate, signed keys, federation version, client
                    .well-known, a profile query over federation from our own server (with a
                    stored session); exit 0 only when all passed
list                print the members of the list (--url, --key)
sign DOC.json       sign a list document with --signing-key, print the JWS to publish
keygen PRIV PUB     write a new Ed25519 key pair for signing lists (PEM; PRIV owner-only)

The list is read from --url (env SAMTAL_FEDERATION_URL) and verified with the public key in
--key (env SAMTAL_FEDERATION_KEY).`
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlags(e, "federation")
		setUsage(fs, synopsis, details)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return nil
		}
		return fmt.Errorf("%w: want check, list, sign or keygen", errUsage)
	}
	verb := args[0]
	fs := newFlags(e, "federation "+verb)
	setUsage(fs, synopsis, details)
	listURL := fs.String("url", os.Getenv("SAMTAL_FEDERATION_URL"), "URL of the signed federation list (env SAMTAL_FEDERATION_URL)")
	keyFile := fs.String("key", os.Getenv("SAMTAL_FEDERATION_KEY"), "PEM file with the list's public key (env SAMTAL_FEDERATION_KEY)")
	asJSON := fs.Bool("json", false, "print JSON")
	switch verb {
	case "check":
		return federationCheck(ctx, e, fs, args[1:], listURL, keyFile, asJSON)
	case "list":
		if err := parseNoArgs(fs, args[1:]); err != nil {
			return err
		}
		l, err := loadList(ctx, e, *listURL, *keyFile)
		if err != nil {
			return err
		}
		return printMembers(e, l, *asJSON)
	case "sign":
		signing := fs.String("signing-key", "", "PEM file with the private key (PKCS #8, Ed25519 or P-256)")
		rest, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(rest) != 1 || *signing == "" {
			return fmt.Errorf("%w: sign takes --signing-key FILE and one document", errUsage)
		}
		return signList(e, *signing, rest[0])
	case "keygen":
		rest, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(rest) != 2 {
			return fmt.Errorf("%w: keygen takes the private and the public key file", errUsage)
		}
		priv, pub, err := federation.GenerateKey()
		if err != nil {
			return err
		}
		if err := writeNew(rest[0], priv, 0o600); err != nil {
			return err
		}
		return writeNew(rest[1], pub, 0o644)
	}
	return fmt.Errorf("%w: unknown federation command %q; want check, list, sign or keygen", errUsage, verb)
}

func federationCheck(ctx context.Context, e *env, fs *flag.FlagSet, args []string, listURL, keyFile *string, asJSON *bool) error {
	acct := accountFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "time for all steps of one server")
	concurrency := fs.Int("concurrency", 64, "servers checked at once")
	caFile := fs.String("ca", "", "PEM file of CA certificates to trust instead of the system's")
	noProfile := fs.Bool("no-profile", false, "skip the profile query over federation (it needs a stored session)")
	servers, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	opts := federation.CheckOptions{Timeout: *timeout, Concurrency: *concurrency}
	if *caFile != "" {
		pemBytes, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("%w: --ca: %v", errUsage, err)
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("%w: --ca %s holds no PEM certificate", errUsage, *caFile)
		}
	}
	if *listURL != "" || len(servers) == 0 {
		l, err := loadList(ctx, e, *listURL, *keyFile)
		if err != nil {
			return err
		}
		opts.List = l
		if len(servers) == 0 {
			servers = l.ServerNames()
		}
	}
	if !*noProfile && hasStoredSession(acct.db) {
		c, done, err := acct.open(ctx, e)
		if err != nil {
			return err
		}
		defer done()
		opts.Client = c
	}
	reports := federation.Check(ctx, servers, opts)
	if *asJSON {
		if err := json.NewEncoder(e.stdout).Encode(struct {
			OK      bool                      `json:"ok"`
			Servers []federation.ServerReport `json:"servers"`
		}{federation.Passed(reports), reports}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVER\tSTEP\tSTATUS\tDETAIL")
		for _, r := range reports {
			for _, s := range r.Steps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Server, s.Step, s.Status, s.Detail)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	failed := 0
	for _, r := range reports {
		if !r.OK {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d servers are not ready to federate", failed, len(reports))
	}
	return nil
}

// hasStoredSession reports whether the database exists, without creating it.
func hasStoredSession(db string) bool {
	if storage.IsPostgres(db) {
		return true
	}
	_, err := os.Stat(strings.TrimPrefix(db, "file:"))
	return err == nil
}

func loadList(ctx context.Context, e *env, listURL, keyFile string) (*federation.List, error) {
	if listURL == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: the list needs --url and --key (or SAMTAL_FEDERATION_URL and SAMTAL_FEDERATION_KEY)", errUsage)
	}
	pemBytes, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --key: %v", errUsage, err)
	}
	key, err := federation.ParsePublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	l, err := federation.Load(ctx, listURL, key, federation.Options{Logger: e.log})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func printMembers(e *env, l *federation.List, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(struct {
			Version   uint64              `json:"version"`
			IssuedAt  time.Time           `json:"issued_at"`
			ExpiresAt time.Time           `json:"expires_at"`
			Members   []federation.Member `json:"members"`
		}{l.Version(), l.IssuedAt(), l.ExpiresAt(), l.Members()})
	}
	fmt.Fprintf(e.stdout, "federation list version %d, issued %s, expires %s\n", l.Version(),
		l.IssuedAt().UTC().Format(time.RFC3339), l.ExpiresAt().UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENCY\tORG NUMBER\tSERVERS\tEMAIL DOMAINS\tLOCALPART\tCONTACT")
	for _, m := range l.Members() {
		rule := m.Localpart
		if rule == "" {
			rule = "{local}"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.OrgNumber, strings.Join(m.Servers, ","), strings.Join(m.EmailDomains, ","), rule, m.Contact)
	}
	return tw.Flush()
}

func signList(e *env, keyFile, docFile string) error {
	pemBytes, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("%w: --signing-key: %v", errUsage, err)
	}
	key, err := federation.ParsePrivateKey(pemBytes)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	raw, err := os.ReadFile(docFile)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var doc federation.Document
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, docFile, err)
	}
	signed, err := federation.Sign(doc, key)
	if errors.Is(err, federation.ErrInvalidList) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, string(signed))
	return err
}

// writeNew writes a file that must not exist yet: a key is never overwritten.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
