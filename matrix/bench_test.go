package matrix_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// The send benchmarks compare the outbox with raw mautrix on the same Dendrite in one run.
// Dendrite on a 2-core machine tops out near 100 sends/s, so compare ratios, not rates:
//
//	go test -tags goolm -run '^$' -bench 'BenchmarkSend' -benchtime 1000x -count 6 ./matrix/ | tee new.txt
//	benchstat -col /impl new.txt
//
// Each op is one message; "raw" is a plain loop over mautrix's SendMessageEvent, what an
// integrator writes without samtal.

// BenchmarkSendOneRoom sends b.N messages into one room: raw loop vs the durable outbox
// (stored with a full fsync before it goes out, marked sent after). Each implementation gets
// a homeserver of its own, started before the timer: sharing one made the second one measured
// pay for the first one's thousand events in the server's database.
func BenchmarkSendOneRoom(b *testing.B) {
	b.Run("impl=raw", func(b *testing.B) {
		srv := matrixtest.NewServer(b)
		raw := srv.Client(b, "raw")
		room := benchRoom(b, raw)
		b.ResetTimer()
		for i := range b.N {
			if _, err := raw.SendMessageEvent(b.Context(), room, eventMessage, matrix.Text(body(i)).Content); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=outbox", func(b *testing.B) {
		srv := matrixtest.NewServer(b)
		ob := newClient(b, srv, "outbox")
		room := benchRoom(b, ob.Mautrix())
		b.ResetTimer()
		var last *matrix.Pending
		for i := range b.N {
			p, err := ob.Send(b.Context(), room, matrix.Text(body(i)), matrix.SendOptions{})
			if err != nil {
				b.Fatal(err)
			}
			last = p
		}
		if _, err := last.Wait(b.Context()); err != nil {
			b.Fatal(err)
		}
	})
}

// farAwayRooms is farAway's number of rooms.
const farAwayRooms = 8

// farAway starts a homeserver of its own for one implementation of BenchmarkSendFarAway,
// behind a proxy that delays every round trip by 20 ms, and returns the proxy's URL, the
// password of user (registered), and a mautrix client of user through the proxy.
func farAway(b *testing.B, user string) (proxyURL, password string, cli *mautrix.Client) {
	b.Helper()
	srv := matrixtest.NewServer(b)
	proxy := newFaultProxy(b, srv.URL)
	_, password = srv.RegisterUser(b, user)
	cli = srv.Client(b, user)
	cli.HomeserverURL, _ = cli.HomeserverURL.Parse(proxy.URL)
	proxy.delay = 20 * time.Millisecond
	return proxy.URL, password, cli
}

// BenchmarkSendFarAway puts a 20 ms delay on every round trip (a homeserver in another data
// centre) and spreads b.N messages over 8 rooms: a plain loop, 8 hand-written goroutines (one
// per room), and the outbox, each against a homeserver of its own.
func BenchmarkSendFarAway(b *testing.B) {
	rawSetup := func(b *testing.B) (*mautrix.Client, []id.RoomID) {
		_, _, raw := farAway(b, "raw")
		var rooms []id.RoomID
		for range farAwayRooms {
			rooms = append(rooms, benchRoom(b, raw))
		}
		b.ResetTimer()
		return raw, rooms
	}
	b.Run("impl=loop", func(b *testing.B) {
		raw, rooms := rawSetup(b)
		for i := range b.N {
			if _, err := raw.SendMessageEvent(b.Context(), rooms[i%farAwayRooms], eventMessage, matrix.Text(body(i)).Content); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=goroutines", func(b *testing.B) {
		raw, rooms := rawSetup(b)
		var wg sync.WaitGroup
		for r := range farAwayRooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := r; i < b.N; i += farAwayRooms {
					if _, err := raw.SendMessageEvent(b.Context(), rooms[r], eventMessage, matrix.Text(body(i)).Content); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	b.Run("impl=outbox", func(b *testing.B) {
		url, pw, _ := farAway(b, "outbox")
		ob := newClientWith(b, matrix.Options{HomeserverURL: url, Login: matrix.Password("outbox", pw), DB: testDB(b)})
		var rooms []id.RoomID
		for range farAwayRooms {
			rooms = append(rooms, benchRoom(b, ob.Mautrix()))
		}
		b.ResetTimer()
		last := make([]*matrix.Pending, farAwayRooms)
		for i := range b.N {
			p, err := ob.Send(b.Context(), rooms[i%farAwayRooms], matrix.Text(body(i)), matrix.SendOptions{})
			if err != nil {
				b.Fatal(err)
			}
			last[i%farAwayRooms] = p
		}
		for _, p := range last {
			if p == nil {
				continue
			}
			if _, err := p.Wait(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSendStored measures how long Send takes to return, which is when the item is
// durable (stored with a full fsync): in one room, with the lane sending the items before it
// at the same time, and with the homeserver stopped (Send asks it nothing). It reports the
// median and the 99th percentile.
//
//	go test -tags goolm -run '^$' -bench 'BenchmarkSendStored' -benchtime 1000x -count 6 ./matrix/
func BenchmarkSendStored(b *testing.B) {
	srv := matrixtest.NewServer(b)
	ob := newClient(b, srv, "outbox")
	room := benchRoom(b, ob.Mautrix())
	for _, down := range []bool{false, true} {
		name := "server=up"
		if down {
			name = "server=down"
			if err := srv.Stop(); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			took := make([]time.Duration, 0, b.N)
			for i := range b.N {
				start := time.Now()
				if _, err := ob.Send(b.Context(), room, matrix.Text(body(i)), matrix.SendOptions{}); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

var eventMessage = matrix.Text("").Type

func body(i int) string { return fmt.Sprintf("Case %d: status changed to Awaiting decision", i) }

func benchRoom(b *testing.B, c *mautrix.Client) id.RoomID {
	b.Helper()
	resp, err := c.CreateRoom(b.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	return resp.RoomID
}
