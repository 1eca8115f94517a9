package pgtest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// initdbArgs are initdb's arguments after -D: the user the tests connect as, with no password
// on loopback.
var initdbArgs = []string{"-U", "samtal", "--auth=trust", "-E", "UTF8", "--no-sync"}

// newCluster puts a fresh, never started database cluster at data, owned by cred: a copy of
// one initdb made (template), which is most of the time a server's start took (about 1 to 2 s
// of initdb against a tenth of that to copy its 40 MB).
func newCluster(bin, data string, cred *syscall.Credential) error {
	tmpl, err := template(bin, cred)
	if err != nil {
		return err
	}
	if err := copyTree(tmpl, data, cred); err != nil {
		return fmt.Errorf("copy the initdb template %s: %w", tmpl, err)
	}
	return nil
}

// template returns the data directory of a cluster that initdb made for bin and cred and that
// no server has run on, made now if there is none yet. It is kept in the temporary directory,
// named for bin, the user and initdb's arguments, so that every test binary of a run shares it
// (scripts/test.sh's temporary directory goes with the run); whichever makes it first
// publishes it with a rename, so a reader never sees half of one.
func template(bin string, cred *syscall.Credential) (string, error) {
	key := sha256.Sum256([]byte(bin + "\x00" + strings.Join(initdbArgs, "\x00")))
	final := filepath.Join(os.TempDir(), fmt.Sprintf("samtal-pg-template-%d-%x", os.Geteuid(), key[:6]))
	data := filepath.Join(final, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err == nil {
		return data, nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), filepath.Base(final)+".new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // after a successful rename, nothing is left there
	if cred != nil {
		if err := os.Chown(tmp, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), append([]string{"-D", filepath.Join(tmp, "data")}, initdbArgs...)...)
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another test binary published one first: use that.
		if _, statErr := os.Stat(filepath.Join(data, "PG_VERSION")); statErr == nil {
			return data, nil
		}
		return "", fmt.Errorf("publish the initdb template: %w", err)
	}
	return data, nil
}

// copyTree copies the directory src to dst (which must not exist), with the same modes, owned
// by cred when it is not nil.
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return errors.New(path + ": neither a file nor a directory")
		}
		if cred != nil {
			return os.Lchown(target, int(cred.Uid), int(cred.Gid))
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
