// Package dovecottest runs a real Dovecot IMAP server (Debian's dovecot-imapd) for tests, on
// loopback with one user and a maildir in a temporary directory, for tests outside mailbridge
// (the gateway daemon's) that need one. It is the helper of mailbridge's own IMAP tests,
// exported.
package dovecottest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// Options shape the Dovecot a test starts.
type Options struct {
	NoIdle        bool   // leave IDLE out of the capabilities, for the polling fallback
	Introspection string // URL of an OAuth 2.0 token introspection endpoint: enables XOAUTH2 and OAUTHBEARER
	// TLS adds an implicit TLS listener (Server.TLSAddr) and STARTTLS on the plain one, with a
	// certificate for 127.0.0.1 and localhost from a CA made for the test (Server.CAFile).
	TLS bool
}

// Server is a real Dovecot IMAP server (Debian's dovecot-imapd) run by a test on loopback,
// with one user whose mail is in a maildir in a temporary directory.
type Server struct {
	Addr     string // host:port of the IMAP listener, plain text (no TLS)
	User     string // the one user, "cases"
	Password string // its password, for LOGIN
	TLSAddr  string // host:port of the implicit TLS listener, with Options.TLS; else ""
	CAFile   string // PEM file of the CA that signed the server's certificate, with Options.TLS
}

// Start starts Dovecot for the test with a minimal configuration of its own and stops
// it when the test ends. Run as root, it runs as the dovecot user (Dovecot will not keep root
// for mail), with the directory handed to it.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/dovecot"); statErr != nil {
			t.Fatal("dovecot is not installed: run the tests through scripts/test.sh, which installs it (apt-get install dovecot-imapd)")
		}
		bin = "/usr/sbin/dovecot"
	}
	dir, err := os.MkdirTemp("", "samtal-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	runAs, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if runAs, err = user.Lookup("dovecot"); err != nil {
			t.Fatalf("running as root and there is no dovecot user to run Dovecot as: %v", err)
		}
		uid, _ := strconv.Atoi(runAs.Uid)
		gid, _ := strconv.Atoi(runAs.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	group, err := user.LookupGroupId(runAs.Gid)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	d := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), User: "cases", Password: "imap-test-password"}
	ssl, tlsPort := "ssl = no\n", 0
	if o.TLS {
		tlsPort = freePort(t)
		d.TLSAddr, d.CAFile = fmt.Sprintf("127.0.0.1:%d", tlsPort), filepath.Join(dir, "ca.pem")
		writeTLSFiles(t, dir)
		ssl = fmt.Sprintf("ssl = yes\nssl_cert = <%[1]s/cert.pem\nssl_key = <%[1]s/key.pem\n", dir)
	}
	mechanisms := "plain login"
	passdb := fmt.Sprintf("passdb {\n  driver = passwd-file\n  args = %s/passwd\n}\n", dir)
	if o.Introspection != "" {
		mechanisms += " xoauth2 oauthbearer"
		passdb = fmt.Sprintf("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = %[1]s/oauth2.conf.ext\n}\n"+
			"passdb {\n  driver = passwd-file\n  mechanisms = plain login\n  args = %[1]s/passwd\n}\n", dir)
		oauth := "introspection_mode = post\nintrospection_url = " + o.Introspection + "\n" +
			"username_attribute = username\nactive_attribute = active\nactive_value = true\n"
		writeFile(t, filepath.Join(dir, "oauth2.conf.ext"), oauth)
	}
	capability := ""
	if o.NoIdle {
		capability = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ENABLE UIDPLUS MOVE UNSELECT NAMESPACE\n"
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
default_internal_user = %[2]s
default_internal_group = %[3]s
default_login_user = %[2]s
first_valid_uid = 1
protocols = imap
listen = 127.0.0.1
%[10]sdisable_plaintext_auth = no
auth_mechanisms = %[4]s
auth_failure_delay = 0
mail_location = maildir:%[1]s/mail/%%u
%[5]s%[6]suserdb {
  driver = static
  args = uid=%[7]s gid=%[8]s home=%[1]s/mail/%%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = %[9]d
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[11]d
  }
}
service anvil {
  chroot =
}
`, dir, runAs.Username, group.Name, mechanisms, capability, passdb, runAs.Uid, runAs.Gid, port, ssl, tlsPort)
	writeFile(t, filepath.Join(dir, "dovecot.conf"), conf)
	writeFile(t, filepath.Join(dir, "passwd"), d.User+":{PLAIN}"+d.Password+"::::::\n")
	if cred != nil {
		if err := filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, int(cred.Uid), int(cred.Gid))
		}); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(dir, "dovecot.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	logs := func() string {
		a, _ := os.ReadFile(filepath.Join(dir, "dovecot.out"))
		b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		return string(a) + string(b)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if greeted(d.Addr) {
			return d
		}
		select {
		case <-exited:
			t.Fatalf("dovecot exited:\n%s", logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot did not answer on %s:\n%s", d.Addr, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// greeted reports whether an IMAP server greets on addr.
func greeted(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "* OK")
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Client logs in to the Dovecot with go-imap's client, as the mail's sender would put it
// there; closed when the test ends.
func (d *Server) Client(t testing.TB) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(d.User, d.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// Append puts a mail into mailbox, as a delivering server or a person would.
func Append(t testing.TB, c *imapclient.Client, mailbox, raw string) {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(raw)), nil)
	if _, err := cmd.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
}
