package mailbridge

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkClaimFullRoom: one pass of the delivery worker that finds nothing to claim (the
// claim and the look-up of the next attempt), with a backlog of mails waiting in the spool for
// one room that has as many posts unsent as it may have. The worker makes such a pass when it
// is woken (a mail spooled, a post sent), so its cost, times how often it runs, is CPU taken
// from the homeserver on the same machine.
//
//	go test -tags goolm -run '^$' -bench BenchmarkClaimFullRoom ./mailbridge/
func BenchmarkClaimFullRoom(b *testing.B) {
	for _, backlog := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			s, _ := openTestSpool(b, "sqlite")
			spoolBacklog(b, s, backlog+refillBelow, refillBelow)
			for b.Loop() {
				got, err := s.due(b.Context(), time.Now(), deliveryBatch)
				if err != nil || len(got) != 0 {
					b.Fatalf("due = %d deliveries, %v; want none (the room is full)", len(got), err)
				}
				if _, _, err := s.nextAttempt(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// spoolBacklog stores total copies of benchMail for one room, from several goroutines (the
// group commit takes them in fewer fsyncs), and records the first posted of them as posted
// into the outbox, as outbox items 1 to posted.
func spoolBacklog(b testing.TB, s *spool, total, posted int) {
	b.Helper()
	raw := benchMail()
	targets := []target{{room: benchRoom, recipient: "bench@agency.example"}}
	next := make(chan struct{}, total)
	for range total {
		next <- struct{}{}
	}
	close(next)
	ids := make(chan int64, total)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range next {
				id, err := s.store(b.Context(), "load@agency.example", raw, targets)
				if err != nil {
					b.Error(err)
					return
				}
				ids <- id
			}
		})
	}
	wg.Wait()
	close(ids)
	if b.Failed() {
		b.FailNow()
	}
	item := int64(0)
	for id := range ids {
		if item == int64(posted) {
			break
		}
		item++
		d := delivery{spoolID: id, target: benchRoom, receivedAt: time.Now()}
		if err := s.posted(b.Context(), d, []int64{item}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRoom is the room of the spool benchmarks' backlog.
const benchRoom = "!bench:hs"

// BenchmarkClaimBacklog: one claim of the delivery worker that finds a batch to post, with a
// backlog of mails waiting in the spool for one room that takes more. A drain after a burst
// makes one such claim per batch; what it costs beyond reading the batch, it costs per mail.
//
//	go test -tags goolm -run '^$' -bench BenchmarkClaimBacklog ./mailbridge/
func BenchmarkClaimBacklog(b *testing.B) {
	for _, backlog := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			s, _ := openTestSpool(b, "sqlite")
			spoolBacklog(b, s, backlog, 0)
			for b.Loop() {
				got, err := s.due(b.Context(), time.Now(), deliveryBatch)
				if err != nil || len(got) != deliveryBatch {
					b.Fatalf("due = %d deliveries, %v; want %d", len(got), err, deliveryBatch)
				}
			}
		})
	}
}
