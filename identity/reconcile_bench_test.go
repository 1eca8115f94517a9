package identity

import (
	"fmt"
	"runtime"
	"testing"

	"maunium.net/go/mautrix/id"
)

// BenchmarkPlan: a reconcile of 5,000 identities (every 50th inactive) against 200 managed
// rooms of 50 members each, without the homeserver's answers (the rooms' members are given):
// the planning itself, in time and memory.
func BenchmarkPlan(b *testing.B) {
	const people, rooms, perRoom = 5000, 200, 50
	roster := Roster{Complete: []string{"agency-a.test"}}
	for i := range people {
		roster.People = append(roster.People, Person{UserID: id.UserID(fmt.Sprintf("@user%04d:agency-a.test", i)), Active: i%50 != 0, Reason: "disabled"})
	}
	var rms []roomMembers
	for r := range rooms {
		rm := roomMembers{room: id.RoomID(fmt.Sprintf("!room%03d:agency-a.test", r)), power: map[id.UserID]int{}}
		for m := range perRoom {
			u := roster.People[(r*perRoom+m*7)%people].UserID
			rm.members = append(rm.members, u)
			if m == 0 {
				rm.power[u] = 50
			}
		}
		rms = append(rms, rm)
	}
	r := &Reconciler{source: StaticSource{Path: "bench.yaml"}, opts: ReconcileOptions{MaxRemovePercent: 100}}
	done := func(ActionKind, id.UserID) bool { return false }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	var p *Plan
	for b.Loop() {
		var err error
		p, err = r.plan("@svc:agency-a.test", roster, rms, done, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "MiB/plan")
	// HeapSys is what the heap took from the OS: an upper bound of the peak, the input
	// (5,000 people, 10,000 memberships) included.
	b.ReportMetric(float64(after.HeapSys)/(1<<20), "MiB-heap-peak")
	b.ReportMetric(float64(len(p.Actions)), "actions")
	b.ReportMetric(float64(p.Members), "members")
}
