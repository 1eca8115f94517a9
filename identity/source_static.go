package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/samtalhq/samtal/matrix"
)

// StaticSource is a Source read from a file each time it is asked: YAML or JSON of the form
//
//	complete: [agency-a.se]
//	people:
//	  - {user_id: "@anna:agency-a.se", email: anna@agency-a.se, active: true}
//	  - {user_id: "@bo:agency-a.se", active: false, reason: "left 2026-05-31"}
type StaticSource struct {
	Path string
}

// Name returns "static:" and the file's name.
func (s StaticSource) Name() string { return "static:" + filepath.Base(s.Path) }

// Roster reads the file.
func (s StaticSource) Roster(_ context.Context) (Roster, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return Roster{}, fmt.Errorf("%w: %w", ErrSourceUnavailable, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStaticFile))
	if err != nil {
		return Roster{}, fmt.Errorf("%w: %w", ErrSourceUnavailable, err)
	}
	var doc struct {
		Complete []string `yaml:"complete" json:"complete"`
		People   []struct {
			UserID string `yaml:"user_id" json:"user_id"`
			Email  string `yaml:"email" json:"email"`
			Active *bool  `yaml:"active" json:"active"`
			Reason string `yaml:"reason" json:"reason"`
		} `yaml:"people" json:"people"`
	}
	if strings.EqualFold(filepath.Ext(s.Path), ".json") {
		err = json.Unmarshal(data, &doc)
	} else {
		err = yaml.Unmarshal(data, &doc)
	}
	if err != nil {
		return Roster{}, fmt.Errorf("%w: %s: %w", ErrSourceUnavailable, s.Path, err)
	}
	r := Roster{Complete: doc.Complete}
	for i, p := range doc.People {
		if p.Active == nil {
			return Roster{}, fmt.Errorf("%w: %s: person %d (%s) has no active: true|false", ErrSourceUnavailable, s.Path, i+1, p.UserID)
		}
		pp := Person{UserID: idOf(p.UserID), Email: p.Email, Active: *p.Active, Reason: p.Reason}
		if err := matrix.ValidateUserID(pp.UserID); err != nil {
			return Roster{}, fmt.Errorf("%w: %s: person %d: %w", ErrSourceUnavailable, s.Path, i+1, err)
		}
		if !pp.Active && pp.Reason == "" {
			pp.Reason = "inactive in " + filepath.Base(s.Path)
		}
		r.People = append(r.People, pp)
	}
	return r, nil
}
