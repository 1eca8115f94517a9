package mailbridge_test

import (
	"fmt"
	"testing"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// TestSameMessageIDOtherContent: the same mail delivered twice with different headers on the
// way (here the gateway's own Authentication-Results, pass then fail) is posted once, and the
// second delivery is done, not retried until it is dead-lettered.
func TestSameMessageIDOtherContent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a homeserver")
	}
	s := newScene(t, mailbridge.Options{})
	body := mail("a@agency.example", "Relayed twice", "relayed@agency.example", "the same mail")
	for _, result := range []string{"pass", "fail"} {
		s.send(t, "a@agency.example", "Authentication-Results: mx.test; dmarc="+result+" header.from=agency.example\r\n"+body)
	}
	s.send(t, "a@agency.example", mail("a@agency.example", "Marker", "marker@agency.example", "after"))
	s.inbox.Wait(t, subjectLine("Marker"))
	if n := count(s.inbox, subjectLine("Relayed twice")); n != 1 {
		t.Errorf("posted %d times, want once", n)
	}
	matrixtest.Eventually(t, func() error {
		if list, err := s.g.Undelivered(t.Context()); err != nil || len(list) != 0 {
			return fmt.Errorf("undelivered: %+v, %v", list, err)
		}
		return nil
	})
}
