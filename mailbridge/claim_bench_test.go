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
			raw := benchMail()
			targets := []target{{room: "!bench:hs", recipient: "bench@agency.example"}}
			var wg sync.WaitGroup
			ids := make(chan int64, backlog+maxPostedPerTarget)
			next := make(chan struct{}, backlog+maxPostedPerTarget)
			for range backlog + maxPostedPerTarget {
				next <- struct{}{}
			}
			close(next)
			for range 32 { // the group commit stores them in a few thousand fsyncs less
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
			posted := 0
			for id := range ids {
				if posted == refillBelow {
					break
				}
				d := delivery{spoolID: id, target: targets[0].room, receivedAt: time.Now()}
				if err := s.posted(b.Context(), d, []int64{id}, nil); err != nil {
					b.Fatal(err)
				}
				posted++
			}
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
