package mailbridge_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// deliveries counts a gateway's delivered mails (a mailbridge.Metrics).
type deliveries struct{ delivered atomic.Int64 }

func (d *deliveries) SMTPReply(int) {}
func (d *deliveries) DMARC(string)  {}
func (d *deliveries) Delivery(outcome string) {
	if outcome == mailbridge.OutcomeDelivered {
		d.delivered.Add(1)
	}
}

// TestTwoGatewaysOnePostgres: two gateway instances on one PostgreSQL database, sharing the
// bot's session, receive mail on their own SMTP ports and deliver from the one spool: every
// mail arrives in the room exactly once.
func TestTwoGatewaysOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two gateways")
	}
	srv := matrixtest.NewServer(t)
	_, password := srv.RegisterUser(t, "mailbot")
	officer := srv.NewClient(t, "officer")
	db, err := matrix.OpenDatabase(t.Context(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	first, err := matrix.New(t.Context(), matrix.Options{HomeserverURL: srv.URL, Login: matrix.Password("mailbot", password), DB: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	second, err := matrix.New(t.Context(), matrix.Options{DB: db}) // the same stored session
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	room := roomWith(t, first, officer, false)
	inbox := matrixtest.NewRecorder(t, officer, room)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(room)})
	if err != nil {
		t.Fatal(err)
	}
	var counts [2]deliveries
	var addrs [2]string
	for i, c := range []*matrix.Client{first, second} {
		_, addrs[i] = startGateway(t, mailbridge.Options{Client: c, Router: router, Metrics: &counts[i]})
	}

	const conns, perConn = 4, 40
	var wg sync.WaitGroup
	for conn := range conns {
		sc := dial(t, addrs[conn%2])
		wg.Go(func() {
			for i := range perConn {
				subject := fmt.Sprintf("Shared %d-%d", conn, i)
				if err := send(sc, "a@agency.example", []string{"cases@agency.example"}, mail("a@agency.example", subject, subject+"@agency.example", "x")); err != nil {
					t.Errorf("%s: %v", subject, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for conn := range conns {
		for i := range perConn {
			inbox.Wait(t, subjectLine(fmt.Sprintf("Shared %d-%d", conn, i)))
		}
	}
	matrixtest.Eventually(t, func() error {
		if n := counts[0].delivered.Load() + counts[1].delivered.Load(); n != conns*perConn {
			return fmt.Errorf("%d deliveries recorded, want %d", n, conns*perConn)
		}
		return nil
	})
	for conn := range conns {
		for i := range perConn {
			if n := count(inbox, subjectLine(fmt.Sprintf("Shared %d-%d", conn, i))); n != 1 {
				t.Errorf("Shared %d-%d posted %d times, want once", conn, i, n)
			}
		}
	}
	t.Logf("delivered by the first gateway %d, by the second %d", counts[0].delivered.Load(), counts[1].delivered.Load())
}
