package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
)

// gatewayConfig is gateway.yaml: see docs/gateway.example.yaml, which documents every field.
type gatewayConfig struct {
	Database string `yaml:"database"`
	Matrix   struct {
		Homeserver    string `yaml:"homeserver"`
		Session       string `yaml:"session"`
		PickleKeyFile string `yaml:"pickle_key_file"`
		E2EE          *bool  `yaml:"e2ee"`
	} `yaml:"matrix"`
	SMTP struct {
		Listen          string `yaml:"listen"`
		Domain          string `yaml:"domain"`
		MaxMessageBytes int64  `yaml:"max_message_bytes"`
		MaxRecipients   int    `yaml:"max_recipients"`
		MaxConnections  int    `yaml:"max_connections"`
		MaxHeaderFields int    `yaml:"max_header_fields"`

		// gwconfig part: the rest of mailbridge.Options (gateway_config_mail.go).
		smtpMoreConfig `yaml:",inline"`
	} `yaml:"smtp"`
	HTTP struct {
		Listen string `yaml:"listen"`
	} `yaml:"http"`
	Delivery struct {
		MinRetryDelay   duration `yaml:"min_retry_delay"`
		MaxRetryDelay   duration `yaml:"max_retry_delay"`
		DeadLetterAfter duration `yaml:"dead_letter_after"`
		Retention       duration `yaml:"retention"`
		ClaimLease      duration `yaml:"claim_lease"`
	} `yaml:"delivery"`
	ShutdownTimeout duration                `yaml:"shutdown_timeout"`
	Templates       map[string]roomTemplate `yaml:"templates"`
	Routes          []routeConfig           `yaml:"routes"`

	// gwconfig part (gateway_config_mail.go):
	DNS        dnsConfig        `yaml:"dns"`
	Federation federationConfig `yaml:"federation"`
	IMAP       []imapConfig     `yaml:"imap"`
}

// routeConfig is one entry of routes: a mailbridge.Route, with its room template by name.
type routeConfig struct {
	Address      string   `yaml:"address"`
	Room         string   `yaml:"room"`
	Template     string   `yaml:"template"`
	AllowSenders []string `yaml:"allow_senders"`

	// gwconfig part:
	SenderPolicy string `yaml:"sender_policy"`
	MembersOnly  bool   `yaml:"members_only"`
}

// roomTemplate is a matrix.RoomSpec as written in YAML.
type roomTemplate struct {
	Preset      string         `yaml:"preset"`
	Name        string         `yaml:"name"`
	Topic       string         `yaml:"topic"`
	Invite      []string       `yaml:"invite"`
	Encrypted   *bool          `yaml:"encrypted"`
	PowerLevels map[string]int `yaml:"power_levels"`
	Space       string         `yaml:"space"`
}

// duration is a time.Duration written as "30s" or "5m".
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s or 5m", n.Line, n.Value)
	}
	*d = duration(v)
	return nil
}

// errConfig marks a gateway.yaml that cannot be used as written.
var errConfig = errors.New("gateway config")

// envRef is ${NAME} or ${NAME:-default} in a value of gateway.yaml.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// loadGatewayConfig reads path: YAML, with ${NAME} in any value replaced by the environment
// variable (an unset one without a default is an error), unknown fields refused.
func loadGatewayConfig(path string) (*gatewayConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	if err := expandEnv(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	// imappolicy part: a wrong value is named by its key (gateway_config_keys.go).
	if err := checkConfigValues(&doc, reflect.TypeFor[gatewayConfig](), ""); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	expanded, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	var cfg gatewayConfig
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	if cfg.Database == "" {
		return nil, fmt.Errorf("%w: %s: database is not set", errConfig, path)
	}
	if len(cfg.Routes) == 0 {
		return nil, fmt.Errorf("%w: %s: no routes: mail would have nowhere to go", errConfig, path)
	}
	return &cfg, nil
}

// expandEnv replaces ${NAME} in every scalar value under n. Values are expanded after parsing,
// so a variable's content is never read as YAML.
func expandEnv(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		var missing []string
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := os.LookupEnv(m[1]); ok && v != "" {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			missing = append(missing, m[1])
			return ""
		})
		if len(missing) > 0 {
			return fmt.Errorf("line %d: environment variable %s is not set", n.Line, strings.Join(missing, ", "))
		}
		n.Tag, n.Style = "", 0 // resolved again from the value: a port stays a number
	}
	for _, c := range n.Content {
		if err := expandEnv(c); err != nil {
			return err
		}
	}
	return nil
}

// routes maps the config's routes onto mailbridge.Route, with their templates.
func (cfg *gatewayConfig) routes() ([]mailbridge.Route, error) {
	var out []mailbridge.Route
	for i, rc := range cfg.Routes {
		r := mailbridge.Route{Address: rc.Address, Room: rc.Room, AllowSenders: rc.AllowSenders}
		r.SenderPolicy, r.MembersOnly = mailbridge.SenderPolicy(rc.SenderPolicy), rc.MembersOnly // gwconfig part
		switch r.SenderPolicy {
		case "", mailbridge.SenderMark, mailbridge.SenderReject, mailbridge.SenderAccept:
		default:
			return nil, fmt.Errorf("%w: routes[%d].sender_policy: %q is not mark, reject or accept", errConfig, i, rc.SenderPolicy)
		}
		if rc.Template != "" {
			t, ok := cfg.Templates[rc.Template]
			if !ok {
				return nil, fmt.Errorf("%w: route %d (%s): no template %q", errConfig, i+1, rc.Address, rc.Template)
			}
			spec, err := t.spec()
			if err != nil {
				return nil, fmt.Errorf("%w: template %q: %w", errConfig, rc.Template, err)
			}
			r.Create = &spec
		}
		out = append(out, r)
	}
	return out, nil
}

// presets are the template's preset names.
var presets = map[string]matrix.Preset{
	"": matrix.PrivateChat, "private_chat": matrix.PrivateChat, "public_room": matrix.PublicRoom,
	"direct_chat": matrix.DirectChat, "case_room": matrix.CaseRoom,
}

func (t roomTemplate) spec() (matrix.RoomSpec, error) {
	p, ok := presets[t.Preset]
	if !ok {
		return matrix.RoomSpec{}, fmt.Errorf("preset %q is not private_chat, public_room, direct_chat or case_room", t.Preset)
	}
	s := matrix.RoomSpec{Preset: p, Name: t.Name, Topic: t.Topic, Encrypted: t.Encrypted, Space: id.RoomID(t.Space)}
	for _, u := range t.Invite {
		if err := matrix.ValidateUserID(id.UserID(u)); err != nil {
			return matrix.RoomSpec{}, err
		}
		s.Invite = append(s.Invite, id.UserID(u))
	}
	if len(t.PowerLevels) > 0 {
		s.PowerLevels = map[id.UserID]matrix.PowerLevel{}
		for u, l := range t.PowerLevels {
			if err := matrix.ValidateUserID(id.UserID(u)); err != nil {
				return matrix.RoomSpec{}, err
			}
			s.PowerLevels[id.UserID(u)] = matrix.PowerLevel(l)
		}
	}
	return s, nil
}
