package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// identityConfig is the identity section of samtal's configuration: how find and chat look
// colleagues up, and what offboard manages. A YAML file named by --identity or
// SAMTAL_IDENTITY.
type identityConfig struct {
	Directory struct {
		IdentityServer string                         `yaml:"identity_server"` // base URL
		AcceptTerms    bool                           `yaml:"accept_terms"`
		Domains        map[string]identity.DomainRule `yaml:"domains"`
		UserDirectory  bool                           `yaml:"user_directory"`
		Static         string                         `yaml:"static"` // a .csv or .yaml file
	} `yaml:"directory"`
	Offboarding struct {
		Rooms            []id.RoomID `yaml:"rooms"`
		Spaces           []id.RoomID `yaml:"spaces"`
		WherePowerful    bool        `yaml:"where_powerful"`
		MaxRemovePercent float64     `yaml:"max_remove_percent"`
		Admin            string      `yaml:"admin"`  // "dendrite" or "" (kicks only)
		Roster           string      `yaml:"roster"` // a static source file
		LDAP             *struct {
			URL              string `yaml:"url"`
			BindDN           string `yaml:"bind_dn"`
			BindPasswordFile string `yaml:"bind_password_file"`
			BaseDN           string `yaml:"base_dn"`
			Filter           string `yaml:"filter"`
			ActiveFilter     string `yaml:"active_filter"`
			UserAttr         string `yaml:"user_attr"`
			ServerName       string `yaml:"server_name"`
		} `yaml:"ldap"`

		// Offboarding admin adapters (issue 11): admin may also be synapse, mas or
		// moderation (the spec's v1.18 lock and suspend); what else the own server does to
		// leavers; MAS's admin API client (offboard_admin.go).
		Lock       bool       `yaml:"lock"`
		Suspend    bool       `yaml:"suspend"`
		Deactivate bool       `yaml:"deactivate"`
		Erase      bool       `yaml:"erase"`
		MAS        *masConfig `yaml:"mas"`
	} `yaml:"offboarding"`
}

func identityFlag(fs *flag.FlagSet) *string {
	return fs.String("identity", os.Getenv("SAMTAL_IDENTITY"), "identity configuration `FILE` (YAML; env SAMTAL_IDENTITY)")
}

func loadIdentityConfig(path string) (*identityConfig, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: name the identity configuration with --identity or SAMTAL_IDENTITY", errUsage)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	var cfg identityConfig
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errUsage, path, err)
	}
	return &cfg, nil
}

// directory builds the resolver chain the configuration names: identity server, domains,
// user directory, static file, in that order.
func (cfg *identityConfig) directory(c *matrix.Client, e *env) (*identity.Directory, error) {
	var rs []identity.Resolver
	d := cfg.Directory
	if d.IdentityServer != "" {
		rs = append(rs, identity.NewIdentityServer(c, d.IdentityServer, identity.IdentityServerOptions{AcceptTerms: d.AcceptTerms}))
	}
	if len(d.Domains) > 0 {
		table := identity.StaticDomains{}
		for k, v := range d.Domains {
			table[strings.ToLower(k)] = v
		}
		rs = append(rs, identity.NewDomainResolver(c, table, identity.DomainOptions{}))
	}
	if d.UserDirectory {
		rs = append(rs, identity.NewUserDirectory(c))
	}
	if d.Static != "" {
		s, err := identity.LoadStaticDirectory(d.Static)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		rs = append(rs, s)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: the identity configuration names no directory (directory: identity_server, domains, user_directory, static)", errUsage)
	}
	return identity.NewDirectory(identity.DirectoryOptions{Logger: e.log}, rs...), nil
}

// identityErr maps the identity package's errors onto the exit codes.
func identityErr(err error) error {
	switch {
	case errors.Is(err, identity.ErrInvalidAddress):
		return fmt.Errorf("%w: %w", errUsage, err)
	case errors.Is(err, identity.ErrNotFound):
		return fmt.Errorf("%w (%w)", err, matrix.ErrNotFound)
	case errors.Is(err, identity.ErrUnavailable), errors.Is(err, identity.ErrSourceUnavailable):
		return fmt.Errorf("%w (%w)", err, errUnavailable)
	}
	return err
}

// runFind prints the Matrix ID of an email address.
func runFind(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "find")
	acct := accountFlags(fs)
	cfgPath := identityFlag(fs)
	asJSON := fs.Bool("json", false, `print {"user_id":...,"source":...,"detail":...}`)
	setUsage(fs, "find [flags] EMAIL", `Prints the Matrix ID of the colleague with the address EMAIL, found through the directory
of the identity configuration, and on standard error where the answer came from. Exit 3 when
nobody is found: the directory never guesses.`)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: want one EMAIL", errUsage)
	}
	_, dir, done, err := openDirectory(ctx, e, acct, *cfgPath, rest[0])
	if err != nil {
		return err
	}
	defer done()
	m, err := dir.Lookup(ctx, rest[0])
	if err != nil {
		return identityErr(err)
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]string{"address": m.Address, "user_id": string(m.UserID), "source": m.Source, "detail": m.Detail})
	}
	fmt.Fprintf(e.stderr, "found by %s: %s\n", m.Source, m.Detail)
	_, err = fmt.Fprintln(e.stdout, m.UserID)
	return err
}

// runChat sends a message into the direct chat with the owner of an email address, made
// when there is none.
func runChat(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "chat")
	acct := accountFlags(fs)
	cfgPath := identityFlag(fs)
	asJSON := fs.Bool("json", false, `print {"room_id":...,"event_id":...,"user_id":...,"created":...}`)
	timeout := fs.Duration("timeout", time.Minute, "give up when the message has not gone out after this long")
	setUsage(fs, "chat [flags] EMAIL MESSAGE...", `Finds the colleague with the address EMAIL (as 'samtal find' does), starts an encrypted
direct chat with them unless there is one, sends MESSAGE into it and prints the room ID.
A second chat with the same address uses the same room.`)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) < 2 {
		return fmt.Errorf("%w: want EMAIL and MESSAGE", errUsage)
	}
	text := strings.Join(rest[1:], " ")
	if strings.TrimSpace(text) == "" {
		return fmt.Errorf("%w: empty MESSAGE", errUsage)
	}
	c, dir, done, err := openDirectory(ctx, e, acct, *cfgPath, rest[0])
	if err != nil {
		return err
	}
	defer done()
	chat, err := identity.NewChats(c, dir, identity.ChatOptions{Logger: e.log}).StartChat(ctx, rest[0])
	if err != nil {
		return identityErr(err)
	}
	sendCtx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	p, err := c.Send(sendCtx, chat.Room, matrix.Text(text), matrix.SendOptions{})
	if err != nil {
		return err
	}
	evt, err := p.Wait(sendCtx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]any{"room_id": chat.Room, "event_id": evt, "user_id": chat.With.UserID, "created": chat.Created})
	}
	_, err = fmt.Fprintln(e.stdout, chat.Room)
	return err
}

// runOffboard plans, and with --apply carries out, the removal of people who left.
func runOffboard(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "offboard")
	acct := accountFlags(fs)
	cfgPath := identityFlag(fs)
	dry := fs.Bool("dry-run", false, "print the plan and change nothing (the default)")
	apply := fs.Bool("apply", false, "carry the plan out")
	force := fs.Bool("force", false, "apply a plan over the safety limit (max_remove_percent)")
	asJSON := fs.Bool("json", false, "print the plan as JSON instead of a table")
	setUsage(fs, "offboard [flags] --dry-run|--apply", `Compares who the source of the identity configuration (offboarding: ldap or roster) says
is active with the members of the managed rooms, and prints the plan: power levels lowered,
kicks, sessions ended (and with lock, suspend or deactivate, what the admin adapter does;
what its server lacks is listed as MISSING). With --apply it is carried out and every action goes into the audit
log ('samtal audit'). A plan that removes more than max_remove_percent of the members is
refused unless --force. A source that cannot be read stops the run, and nothing is removed.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *dry && *apply {
		return fmt.Errorf("%w: --dry-run and --apply exclude each other", errUsage)
	}
	cfg, err := loadIdentityConfig(*cfgPath)
	if err != nil {
		return err
	}
	src, err := cfg.source()
	if err != nil {
		return err
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	audit, err := identity.OpenAuditLog(ctx, c.Database())
	if err != nil {
		return err
	}
	o := cfg.Offboarding
	opts := identity.ReconcileOptions{MaxRemovePercent: o.MaxRemovePercent, Force: *force, Logger: e.log,
		Lock: o.Lock, Suspend: o.Suspend, Deactivate: o.Deactivate, Erase: o.Erase}
	if opts.Admin, err = cfg.admin(c); err != nil {
		return err
	}
	rec := identity.NewReconciler(c, src, identity.Scope{Rooms: o.Rooms, Spaces: o.Spaces, WherePowerful: o.WherePowerful}, audit, opts)
	plan, planErr := rec.Plan(ctx)
	if plan == nil {
		return identityErr(planErr)
	}
	if *asJSON {
		err = plan.WriteJSON(e.stdout)
	} else {
		err = plan.WriteTable(e.stdout)
	}
	if err != nil || planErr != nil {
		return errors.Join(planErr, err)
	}
	if !*apply {
		return nil
	}
	return rec.Apply(ctx, plan)
}

func (cfg *identityConfig) source() (identity.Source, error) {
	o := cfg.Offboarding
	switch {
	case o.LDAP != nil && o.Roster != "":
		return nil, fmt.Errorf("%w: offboarding names both ldap and roster; choose one", errUsage)
	case o.LDAP != nil:
		l := o.LDAP
		src := &identity.LDAPSource{URL: l.URL, BindDN: l.BindDN, BaseDN: l.BaseDN, Filter: l.Filter,
			ActiveFilter: l.ActiveFilter, UserAttr: l.UserAttr, ServerName: l.ServerName}
		if l.BindPasswordFile != "" {
			pw, err := os.ReadFile(l.BindPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("%w: offboarding.ldap.bind_password_file: %w", errUsage, err)
			}
			src.BindPassword = strings.TrimSpace(string(pw))
		}
		return src, nil
	case o.Roster != "":
		return identity.StaticSource{Path: o.Roster}, nil
	}
	return nil, fmt.Errorf("%w: the identity configuration names no offboarding source (offboarding: ldap or roster)", errUsage)
}

// runAudit prints the offboarding audit log.
func runAudit(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "audit")
	acct := accountFlags(fs)
	user := fs.String("user", "", "only the entries about this `USER_ID`")
	run := fs.String("run", "", "only the entries of this run `ID`")
	limit := fs.Int("limit", 100, "at most this many entries, the latest")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	setUsage(fs, "audit [flags]", `Prints the offboarding audit log: when, who acted, what, on whom, where, why, how it went.`)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	db, _, err := acct.openDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	audit, err := identity.OpenAuditLog(ctx, db)
	if err != nil {
		return err
	}
	entries, err := audit.List(ctx, identity.AuditFilter{Target: id.UserID(*user), RunID: *run, Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, en := range entries {
			if err := enc.Encode(en); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN\tACTOR\tACTION\tTARGET\tROOM\tOUTCOME\tREASON")
	for _, en := range entries {
		room := string(en.Room)
		if room == "" {
			room = "-"
		}
		outcome := en.Outcome
		if en.ErrCode != "" || en.Status != 0 {
			outcome += fmt.Sprintf(" (%d %s)", en.Status, en.ErrCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", en.At.UTC().Format(time.RFC3339), en.Actor, en.Action, en.Target, room, outcome, en.Reason)
	}
	return tw.Flush()
}

// openDirectory is what find and chat share before they look email up: the identity config,
// the address checked before anything is opened, the account's client, its directory.
func openDirectory(ctx context.Context, e *env, acct *account, cfgPath, email string) (*matrix.Client, *identity.Directory, func(), error) {
	cfg, err := loadIdentityConfig(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := identity.ParseAddress(email); err != nil {
		return nil, nil, nil, identityErr(err)
	}
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := cfg.directory(c, e)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return c, dir, done, nil
}
