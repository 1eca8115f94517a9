package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/samtalhq/samtal/identity"
)

// slapdServer is a real OpenLDAP server (slapd from Debian's package) on a loopback port, with
// the agency's people under ou=people.
type slapdServer struct {
	URL    string
	BaseDN string
	rootDN string
	rootPW string
	cmd    *exec.Cmd
	log    string
}

const slapdSuffix = "dc=agency-a,dc=test"

// startSlapd starts slapd for the test, or skips when it is not installed (scripts/test.sh
// installs it).
func startSlapd(t *testing.T) *slapdServer {
	t.Helper()
	bin, err := exec.LookPath("slapd")
	if err != nil {
		for _, p := range []string{"/usr/sbin/slapd", "/usr/local/sbin/slapd"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		t.Skip("slapd is not installed (apt-get install slapd; scripts/test.sh does it)")
	}
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "db"), 0o700))
	s := &slapdServer{BaseDN: slapdSuffix, rootDN: "cn=admin," + slapdSuffix, rootPW: "root-" + fmt.Sprint(time.Now().UnixNano()), log: filepath.Join(dir, "slapd.log")}
	var includes strings.Builder
	for _, schema := range []string{"core", "cosine", "inetorgperson", "nis"} {
		fmt.Fprintf(&includes, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	conf := includes.String() + fmt.Sprintf(`modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
database mdb
maxsize 67108864
suffix "%[2]s"
rootdn "%[3]s"
rootpw "%[4]s"
directory %[1]s/db
`, dir, slapdSuffix, s.rootDN, s.rootPW)
	confPath := filepath.Join(dir, "slapd.conf")
	must(t, os.WriteFile(confPath, []byte(conf), 0o600))
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", port)
		logf, err := os.Create(s.log)
		must(t, err)
		// -d 0: stay in the foreground, so that the test owns the process.
		s.cmd = exec.Command(bin, "-f", confPath, "-h", s.URL+"/", "-d", "0")
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		must(t, s.cmd.Start())
		logf.Close()
		if s.waitReady(t) {
			break
		}
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if attempt == 2 {
			out, _ := os.ReadFile(s.log)
			t.Fatalf("slapd did not start: %s", out)
		}
	}
	t.Cleanup(s.stop)
	s.add(t, "dn: "+slapdSuffix, "objectClass: dcObject", "objectClass: organization", "o: Agency A", "dc: agency-a")
	s.add(t, "dn: ou=people,"+slapdSuffix, "objectClass: organizationalUnit", "ou: people")
	return s
}

func (s *slapdServer) waitReady(t *testing.T) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := ldap.DialURL(s.URL); err == nil {
			conn.Close()
			return true
		}
		if s.cmd.ProcessState != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func (s *slapdServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

func (s *slapdServer) conn(t *testing.T) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(s.URL)
	must(t, err)
	must(t, conn.Bind(s.rootDN, s.rootPW))
	return conn
}

// add adds an entry given as LDIF-like lines "attr: value", the first being its dn.
func (s *slapdServer) add(t *testing.T, lines ...string) {
	t.Helper()
	conn := s.conn(t)
	defer conn.Close()
	dn := strings.TrimPrefix(lines[0], "dn: ")
	req := ldap.NewAddRequest(dn, nil)
	attrs := map[string][]string{}
	var order []string
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		if _, ok := attrs[k]; !ok {
			order = append(order, k)
		}
		attrs[k] = append(attrs[k], v)
	}
	for _, k := range order {
		req.Attribute(k, attrs[k])
	}
	must(t, conn.Add(req))
}

// addPerson adds uid=localpart under ou=people.
func (s *slapdServer) addPerson(t *testing.T, localpart string) {
	t.Helper()
	s.add(t, "dn: uid="+localpart+",ou=people,"+slapdSuffix, "objectClass: inetOrgPerson", "uid: "+localpart,
		"cn: "+localpart, "sn: "+localpart, "mail: "+localpart+"@agency-a.test", "employeeType: staff")
}

// disable marks a person as disabled, as the agency's directory does when someone leaves.
func (s *slapdServer) disable(t *testing.T, localpart string) {
	t.Helper()
	conn := s.conn(t)
	defer conn.Close()
	req := ldap.NewModifyRequest("uid="+localpart+",ou=people,"+slapdSuffix, nil)
	req.Replace("employeeType", []string{"disabled"})
	must(t, conn.Modify(req))
}

// source is the LDAPSource for this directory, for people on serverName.
func (s *slapdServer) source(serverName string) *identity.LDAPSource {
	return &identity.LDAPSource{
		URL: s.URL, BindDN: s.rootDN, BindPassword: s.rootPW, BaseDN: "ou=people," + slapdSuffix,
		Filter: "(objectClass=inetOrgPerson)", ActiveFilter: "(!(employeeType=disabled))", ServerName: serverName,
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestLDAPSource(t *testing.T) {
	s := startSlapd(t)
	for _, p := range []string{"anna", "bo", "cecilia"} {
		s.addPerson(t, p)
	}
	s.disable(t, "bo")
	src := s.source("agency-a.test")
	r, err := src.Roster(t.Context())
	must(t, err)
	got := map[string]bool{}
	for _, p := range r.People {
		got[string(p.UserID)] = p.Active
	}
	want := map[string]bool{"@anna:agency-a.test": true, "@bo:agency-a.test": false, "@cecilia:agency-a.test": true}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(r.Complete) != 1 || r.Complete[0] != "agency-a.test" {
		t.Fatalf("Roster = %v (complete %v), want %v", got, r.Complete, want)
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := *src
		bad.BindPassword = "wrong"
		_, err := bad.Roster(t.Context())
		if !errors.Is(err, identity.ErrSourceUnavailable) || strings.Contains(err.Error(), "wrong") {
			t.Fatalf("Roster = %v, want ErrSourceUnavailable without the password", err)
		}
	})
	t.Run("filter matches nobody", func(t *testing.T) {
		empty := *src
		empty.BaseDN = slapdSuffix
		empty.Filter = "(uid=nobody-at-all)"
		if _, err := empty.Roster(t.Context()); !errors.Is(err, identity.ErrSourceUnavailable) {
			t.Fatalf("Roster = %v, want ErrSourceUnavailable", err)
		}
	})
	t.Run("server down", func(t *testing.T) {
		s.stop()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if _, err := src.Roster(ctx); !errors.Is(err, identity.ErrSourceUnavailable) {
			t.Fatalf("Roster = %v, want ErrSourceUnavailable", err)
		}
	})
}

func TestLDAPDirectory(t *testing.T) {
	s := startSlapd(t)
	s.addPerson(t, "anna")
	s.addPerson(t, "bo")
	s.add(t, "dn: uid=bo2,ou=people,"+slapdSuffix, "objectClass: inetOrgPerson", "uid: bo2", "cn: bo2", "sn: bo2", "mail: bo@agency-a.test")
	d := &identity.LDAPDirectory{URL: s.URL, BindDN: s.rootDN, BindPassword: s.rootPW, BaseDN: slapdSuffix, ServerName: "agency-a.test"}
	dir := identity.NewDirectory(identity.DirectoryOptions{TTL: -1, NotFoundTTL: -1}, d)
	m, err := dir.Lookup(t.Context(), "Anna@agency-a.test")
	if err != nil || m.UserID != "@anna:agency-a.test" || m.Source != "ldap" {
		t.Fatalf("Lookup = %+v, %v", m, err)
	}
	if _, err := dir.Lookup(t.Context(), "bo@agency-a.test"); !errors.Is(err, identity.ErrAmbiguous) {
		t.Fatalf("two entries: %v, want ErrAmbiguous", err)
	}
	if _, err := dir.Lookup(t.Context(), "x*)(uid=*@agency-a.test"); !errors.Is(err, identity.ErrNotFound) && !errors.Is(err, identity.ErrInvalidAddress) {
		t.Fatalf("filter injection: %v", err)
	}
	if _, err := dir.Lookup(t.Context(), "nobody@agency-a.test"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("unknown: %v, want ErrNotFound", err)
	}
	s.stop()
	if _, err := dir.Lookup(t.Context(), "anna@agency-a.test"); !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("slapd down: %v, want ErrUnavailable", err)
	}
}
