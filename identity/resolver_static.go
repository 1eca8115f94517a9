package identity

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// StaticDirectory is a fixed address book for closed deployments: email address (lower case)
// -> Matrix ID. Load one from a file with LoadStaticDirectory.
type StaticDirectory map[string]id.UserID

// Name returns "static".
func (s StaticDirectory) Name() string { return "static" }

// Resolve looks the address up.
func (s StaticDirectory) Resolve(_ context.Context, addr Address) (Match, error) {
	uid, ok := s[addr.Key()]
	if !ok {
		return Match{}, fmt.Errorf("%w: %s is not in the static directory", ErrNotFound, addr.Key())
	}
	return Match{UserID: uid, Detail: "static directory"}, nil
}

// maxStaticFile bounds a static directory file.
const maxStaticFile = 64 << 20

// LoadStaticDirectory reads a static directory from a CSV file (.csv: lines of
// "email,user_id", an optional header line naming those columns) or a YAML file (.yaml, .yml:
// a mapping from email to user ID). Every line is checked; the first bad one is the error.
func LoadStaticDirectory(path string) (StaticDirectory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: static directory: %w", err)
	}
	defer f.Close()
	r := io.LimitReader(f, maxStaticFile)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return ParseStaticCSV(r)
	case ".yaml", ".yml":
		return ParseStaticYAML(r)
	}
	return nil, fmt.Errorf("identity: static directory %s: want a .csv, .yaml or .yml file", path)
}

// ParseStaticCSV reads lines of "email,user_id"; a first line "email,user_id" is a header.
func ParseStaticCSV(r io.Reader) (StaticDirectory, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 2
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	out := StaticDirectory{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("identity: static directory: %w", err)
		}
		if line == 1 && strings.EqualFold(rec[0], "email") {
			continue
		}
		if err := out.add(rec[0], rec[1]); err != nil {
			return nil, fmt.Errorf("identity: static directory, record %d: %w", line, err)
		}
	}
}

// ParseStaticYAML reads a YAML mapping from email address to user ID.
func ParseStaticYAML(r io.Reader) (StaticDirectory, error) {
	var m map[string]string
	if err := yaml.NewDecoder(r).Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("identity: static directory: %w", err)
	}
	out := StaticDirectory{}
	for addr, uid := range m {
		if err := out.add(addr, uid); err != nil {
			return nil, fmt.Errorf("identity: static directory: %w", err)
		}
	}
	return out, nil
}

func (s StaticDirectory) add(address, user string) error {
	addr, err := ParseAddress(address)
	if err != nil {
		return err
	}
	uid := id.UserID(strings.TrimSpace(user))
	if err := matrix.ValidateUserID(uid); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if prev, dup := s[addr.Key()]; dup && prev != uid {
		return fmt.Errorf("%w: %s is listed as %s and %s", ErrAmbiguous, addr.Key(), prev, uid)
	}
	s[addr.Key()] = uid
	return nil
}
