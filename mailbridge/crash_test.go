package mailbridge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The crash helper is this test binary run as a gateway process of its own, so that the
// crash test can kill it with SIGKILL.
const crashHelperEnv = "SAMTAL_MAILBRIDGE_CRASH_HELPER"

// crashTotalEnv lowers TestGatewayKilled's 1000 mails for repeated runs (-count=20).
const crashTotalEnv = "SAMTAL_MAIL_CRASH_TOTAL"

// TestCrashHelper is not a test: run by TestGatewayKilled, it serves the gateway until killed.
func TestCrashHelper(t *testing.T) {
	if os.Getenv(crashHelperEnv) != "1" {
		t.Skip("run by TestGatewayKilled")
	}
	g := processGateway(t, mailbridge.Options{
		Resolver: mailbridge.DNSServer(startDNS(t).Addr), // never the machine's resolver
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrFile := os.Getenv("CRASH_ADDR")
	if err := os.WriteFile(addrFile+".tmp", []byte(l.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
		t.Fatal(err)
	}
	_ = g.Serve(context.Background(), l)
}

// TestGatewayKilled: 1000 mails over 8 connections while the gateway process is killed with
// SIGKILL at random points and started again: every mail that got a 250 is in its room exactly
// once, and one that got no answer (or a 4xx) at most once.
func TestGatewayKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a gateway process several times")
	}
	ps := newProcessScene(t, crashHelperEnv)
	inbox := ps.inbox

	var accepted []string   // got 250
	var unanswered []string // got a 4xx or no answer: may arrive (once) or not
	start := func(round int) (*exec.Cmd, string) {
		t.Helper()
		addrFile := filepath.Join(ps.dir, fmt.Sprintf("addr-%d", round))
		cmd := ps.start(t, "TestCrashHelper", "CRASH_ADDR="+addrFile)
		var addr []byte
		matrixtest.Eventually(t, func() error {
			var err error
			addr, err = os.ReadFile(addrFile)
			return err
		})
		return cmd, string(addr)
	}
	// 1000 mails over 8 connections; the process is killed after a random number of mails
	// accepted, while more are in flight, and started again, until all 1000 are accepted.
	const conns = 8
	total := 1000
	if v := os.Getenv(crashTotalEnv); v != "" { // fewer, for repeated runs
		if _, err := fmt.Sscan(v, &total); err != nil {
			t.Fatalf("%s: %v", crashTotalEnv, err)
		}
	}
	var next atomic.Int64
	var mu sync.Mutex
	rounds := 0
	for ; ; rounds++ {
		mu.Lock()
		done := len(accepted) >= total
		mu.Unlock()
		if done {
			break
		}
		cmd, addr := start(rounds)
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				sc := newClient(c)
				if sc == nil {
					return
				}
				defer sc.Close()
				for {
					mu.Lock()
					enough := len(accepted) >= total
					mu.Unlock()
					if enough {
						return
					}
					subject := fmt.Sprintf("Crash %d", next.Add(1))
					err := send(sc, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", subject, subject+"@agency.example", "x"))
					mu.Lock()
					if err != nil {
						unanswered = append(unanswered, subject)
					} else {
						accepted = append(accepted, subject)
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
		// Kill after a random number of accepted mails, while more are in flight.
		mu.Lock()
		want := min(total, len(accepted)+1+rand.IntN(150))
		mu.Unlock()
		matrixtest.Eventually(t, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(accepted) < want {
				return fmt.Errorf("%d of %d mails accepted", len(accepted), want)
			}
			return nil
		})
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		wg.Wait()
	}
	_, addr := start(rounds)
	if err := send(dial(t, addr), "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", "Marker", "marker@agency.example", "last")); err != nil {
		t.Fatal(err)
	}
	for _, s := range accepted {
		inbox.Wait(t, subjectLine(s))
	}
	inbox.Wait(t, subjectLine("Marker"))
	for _, s := range accepted {
		if n := count(inbox, subjectLine(s)); n != 1 {
			t.Errorf("%s posted %d times, want once", s, n)
		}
	}
	doubled := 0
	seen := map[string]bool{}
	for _, e := range inbox.Events() {
		if line := e.Text(); strings.Contains(line, "Subject: Crash ") {
			if seen[line] {
				doubled++
			}
			seen[line] = true
		}
	}
	if doubled > 0 {
		t.Errorf("%d mails posted twice", doubled)
	}
	for _, s := range unanswered {
		if n := count(inbox, subjectLine(s)); n > 1 {
			t.Errorf("%s (not accepted) posted %d times, want at most once", s, n)
		}
	}
	t.Logf("%d mails accepted, %d not answered, over %d kills", len(accepted), len(unanswered), rounds)
}

// newClient says EHLO on c, or closes it and returns nil; for goroutines, which must not
// call t.Fatal.
func newClient(c net.Conn) *smtp.Client {
	sc := smtp.NewClient(c)
	if err := sc.Hello("client.test"); err != nil {
		sc.Close()
		return nil
	}
	return sc
}
