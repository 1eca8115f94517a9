package mailbridge

import (
	"fmt"
	"testing"
)

// BenchmarkPostedWith: the confirmer's look-up of the posted delivery an outbox outcome
// belongs to, once per outcome, with a backlog of posted deliveries waiting for the outbox
// (a gateway that accepted faster than the homeserver takes). It must not cost as much as
// the backlog: with a query that walked every posted delivery, a backlog of a few thousand
// halved the delivered rate.
//
//	go test -tags goolm -run '^$' -bench BenchmarkPostedWith ./mailbridge/
func BenchmarkPostedWith(b *testing.B) {
	for _, backlog := range []int{100, 5000} {
		b.Run(fmt.Sprintf("backlog=%d", backlog), func(b *testing.B) {
			s, _ := openTestSpool(b, "sqlite")
			spoolBacklog(b, s, backlog, backlog)
			n := 0
			for b.Loop() {
				n++
				got, err := s.postedWith(b.Context(), int64(n%backlog+1))
				if err != nil || len(got) != 1 {
					b.Fatalf("postedWith = %v, %v; want one delivery", got, err)
				}
			}
		})
	}
}
