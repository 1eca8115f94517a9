package e2ee

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreatePickleKey reads the pickle key from path, or creates one (32 random bytes,
// base64, mode 0600) if the file does not exist. It refuses a file that others can read, since
// whoever has the key and the database has the device's keys.
func LoadOrCreatePickleKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("e2ee: create pickle key directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("e2ee: create pickle key: %w", err)
		}
		_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("e2ee: write pickle key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("e2ee: pickle key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("e2ee: pickle key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("e2ee: read pickle key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("e2ee: pickle key %s is not base64: %w", path, err)
	}
	if len(key) < minPickleKey {
		return nil, fmt.Errorf("e2ee: pickle key %s is %d bytes; want at least %d", path, len(key), minPickleKey)
	}
	return key, nil
}
