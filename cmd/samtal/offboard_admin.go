package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/matrix"
)

// masConfig is offboarding.mas: the client of MAS's admin API (a client listed in MAS's
// policy.data.admin_clients). The secret is read from a file, never from the YAML itself.
type masConfig struct {
	URL              string `yaml:"url"`
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	TokenURL         string `yaml:"token_url"` // "" means url + /oauth2/token
}

// admin builds the admin adapter offboarding.admin names, acting as c (an administrator of
// its server), or nil for kicks only.
func (cfg *identityConfig) admin(c *matrix.Client) (identity.Admin, error) {
	o := cfg.Offboarding
	if o.MAS != nil && o.Admin != "mas" {
		return nil, fmt.Errorf("%w: offboarding.mas is set but offboarding.admin is %q, not mas", errUsage, o.Admin)
	}
	if o.Admin == "" && (o.Lock || o.Suspend || o.Deactivate) {
		return nil, fmt.Errorf("%w: offboarding lock, suspend and deactivate need an offboarding.admin", errUsage)
	}
	switch o.Admin {
	case "":
		return nil, nil
	case "dendrite":
		return identity.NewDendrite(c), nil
	case "synapse":
		return identity.NewSynapse(c, nil), nil
	case "moderation":
		return identity.NewAccountModeration(c, nil), nil
	case "mas":
		m := o.MAS
		if m == nil || m.URL == "" || m.ClientID == "" || m.ClientSecretFile == "" {
			return nil, fmt.Errorf("%w: offboarding.admin mas needs offboarding.mas with url, client_id and client_secret_file", errUsage)
		}
		secret, err := os.ReadFile(m.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("%w: offboarding.mas.client_secret_file: %w", errUsage, err)
		}
		a, err := identity.NewMAS(identity.MASOptions{URL: m.URL, ClientID: m.ClientID, ClientSecret: strings.TrimSpace(string(secret)),
			TokenURL: m.TokenURL, ServerName: c.UserID().Homeserver()})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("%w: offboarding.admin %q: want dendrite, synapse, mas, moderation or nothing", errUsage, o.Admin)
}
