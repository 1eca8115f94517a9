package mailbridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-msgauth/authres"
)

// FuzzStamp: whatever a mail holds and whatever the envelope says, the spooled mail starts
// with the gateway's Return-Path and Authentication-Results, no other Authentication-Results
// field survives from an untrusted client, ReadAuthResults reads back the verdict that was
// written, and unstamped gives back the mail as received (with the renames).
func FuzzStamp(f *testing.F) {
	for _, b := range corpus(f) { // fuzz_test.go
		f.Add(b, "a@agency.example", "user")
	}
	f.Add([]byte("Authentication-Results: mx.test; dmarc=pass\r\nFrom: a@b.example\r\n\r\nx"), "", "")
	f.Add([]byte("authentication-results : mx.test; spf=pass\nX: y\n\nbody"), "x>\r\nEvil: 1", "u\r\nX-Evil: 1")
	f.Add([]byte("Subject: s\r\n Authentication-Results: folded\r\n\r\n"), "a@b", "")
	g := &Gateway{opts: Options{Domain: "mx.test"}}
	f.Fuzz(func(t *testing.T, raw []byte, from, user string) {
		if startsFolded(raw) {
			return // refused at DATA with 550 5.6.0
		}
		v := verdict{spf: authres.ResultFail, spfDomain: domainOrEmpty(from), dmarc: authres.ResultFail, fromDomain: "bank.example",
			policy: "reject", user: user, dkim: []authres.DKIMResult{{Value: authres.ResultPass, Domain: "signed.example"}}}
		stamped := g.stamp(raw, envelope{from: from}, v)
		if got := unstamped(stamped); !bytes.Equal(got, renameFields(raw, "Authentication-Results", untrustedAuthResults)) {
			t.Fatalf("unstamped does not give back the mail:\n%q\n%q", got, raw)
		}
		if !bytes.HasPrefix(stamped, []byte("Return-Path: <")) {
			t.Fatal("no Return-Path on top")
		}
		e, _ := message.Read(bytes.NewReader(stamped))
		if e == nil {
			return // a header go-message cannot read; DATA refuses such mail before stamping
		}
		fields := e.Header.FieldsByKey("Authentication-Results")
		n := 0
		for fields.Next() {
			n++
		}
		if n != 1 {
			t.Fatalf("%d Authentication-Results fields in\n%q", n, stamped)
		}
		if rp := e.Header.Values("Return-Path"); len(rp) == 0 || strings.ContainsAny(rp[0], "\r\n") {
			t.Fatalf("Return-Path %q", rp)
		}
		ar, ok := ReadAuthResults(e.Header, "mx.test")
		want := AuthResults{SPF: "fail", DKIM: "pass", DMARC: "fail", From: "bank.example", Submitter: token(user)}
		if !ok || ar != want {
			t.Fatalf("read back %+v, %v; want %+v", ar, ok, want)
		}
	})
}
