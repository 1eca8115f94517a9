// Command mailload is the mail gateway's load tool: it drives N SMTP connections into one
// route and measures the accept rate (250 replies per second), the delivered rate (events seen
// in the room per second by a syncing client) and the latency from the end of DATA to the event
// seen by that client; with -pid it samples the gateway's resident memory and reports the CPU
// time per event of the gateway and of its child processes (the homeserver of samtal dev), and
// with -raw it first measures a raw send loop (one client, -raw-user, sending the messages the
// gateway makes of the load's mails into the same room, while the reader syncs) against the
// same homeserver, for comparison. The reader, and the raw loop's sender from its loop on, move
// their read markers about once a second, as users reading along do (the gateway's syncer
// does too). docs/benchmarks.md has the commands.
//
//	samtal dev -dir /tmp/bench &   # prints the demo user's password, the room and the SMTP address
//	go run ./internal/tools/mailload -smtp 127.0.0.1:2525 -to demo@samtal.localhost \
//	    -homeserver http://127.0.0.1:8008 -user demo -room '!room:localhost' -conns 8 -duration 60s
//
// The password of -user is read from $MAILLOAD_PASSWORD, never from a flag.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"maps"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
)

func main() {
	log.SetFlags(0)
	smtpAddr := flag.String("smtp", "127.0.0.1:2525", "the gateway's SMTP address")
	to := flag.String("to", "demo@samtal.localhost", "recipient: an address routed to -room")
	from := flag.String("from", "load@example.org", "envelope sender")
	conns := flag.Int("conns", 8, "SMTP connections")
	duration := flag.Duration("duration", time.Minute, "how long to send; 0: only the raw loop (-raw)")
	rate := flag.Float64("rate", 0, "mails per second over all connections; 0: as fast as the gateway answers")
	size := flag.Int("size", 1500, "approximate size of each mail in bytes")
	hs := flag.String("homeserver", "http://127.0.0.1:8008", "homeserver of the syncing reader")
	user := flag.String("user", "demo", "the reader, a member of -room (password in $MAILLOAD_PASSWORD)")
	room := flag.String("room", "", "the room the route posts into")
	wait := flag.Duration("wait", 5*time.Minute, "after sending, how long to wait for the events still missing")
	raw := flag.Duration("raw", 0, "first run a raw send loop of this long into -room, for comparison")
	rawUser := flag.String("raw-user", "", "the raw loop's sender (password in $MAILLOAD_RAW_PASSWORD), invited into -room by -user; empty: -user sends")
	pid := flag.Int("pid", 0, "process ID of the gateway, whose peak RSS is reported")
	dnsAddr := flag.String("dns", "", "serve DNS on this address (host:port) for -from's domain: SPF and DMARC records that pass; the gateway's resolver (samtal dev -dns)")
	flag.Parse()
	if *room == "" {
		log.Fatal("mailload: -room is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *dnsAddr != "" {
		_, domain, _ := strings.Cut(*from, "@")
		stopDNS, err := serveDNS(*dnsAddr, domain)
		if err != nil {
			log.Fatalf("mailload: %v", err)
		}
		defer stopDNS()
	}

	reader, err := login(ctx, *hs, *user, os.Getenv("MAILLOAD_PASSWORD"))
	if err != nil {
		log.Fatalf("mailload: log in as %s: %v", *user, err)
	}
	defer func() { _, _ = reader.Logout(context.Background()) }()
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", la)
	}
	// The reader syncs from here on, during the raw loop too: the homeserver does the same
	// work for it in both.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	seen := newSeen()
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); syncLoop(syncCtx, reader, id.RoomID(*room), run, seen) }()

	body := strings.Repeat("The decision in the case was made today; see the case file for details.\r\n", max(1, *size/74))
	loadMail := func(subject string) string {
		return fmt.Sprintf("From: Load <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@mailload.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s",
			*from, *to, subject, strings.ReplaceAll(subject, " ", "-"), body)
	}
	var rawRate float64 // messages per second of the raw loop; 0: none ran
	if *raw > 0 {
		sender := reader
		if *rawUser != "" {
			// Another account than the reader's, as the gateway's is: the homeserver does for
			// the reader what it does for the gateway's events (notifications, unread counts),
			// which it skips for the reader's own.
			if sender, err = login(ctx, *hs, *rawUser, os.Getenv("MAILLOAD_RAW_PASSWORD")); err != nil {
				log.Fatalf("mailload: log in as %s: %v", *rawUser, err)
			}
			// Its sync stops before it logs out: a sync after the logout fails (M_UNKNOWN_TOKEN).
			defer func() { stopSync(); _, _ = sender.Logout(context.Background()) }()
			if err := joinRoom(ctx, reader, sender, id.RoomID(*room)); err != nil {
				log.Fatalf("mailload: %s joins %s: %v", *rawUser, *room, err)
			}
			// It reads along, as the reader does, for the rest of the run: a member that
			// never reads makes each event cost the homeserver more than the one before
			// (see syncLoop), and after the raw loop that would be the gateway's events.
			go syncLoop(syncCtx, sender, id.RoomID(*room), run, newSeen())
		}
		before := cpuTimes(*pid)
		n, elapsed := rawLoop(ctx, sender, id.RoomID(*room), *raw, loadMail)
		rawRate = float64(n) / elapsed.Seconds()
		fmt.Printf("raw send loop: %d messages in %.1fs = %.1f/s\n", n, elapsed.Seconds(), rawRate)
		if line := cpuPer(before, cpuTimes(*pid), n, "raw message"); line != "" {
			fmt.Println(line)
		}
	}
	if *duration <= 0 {
		return // the raw loop alone, for a comparison after the gateway's delivery
	}
	cpuStart := cpuTimes(*pid)

	var peak atomic.Int64
	if *pid > 0 {
		go sampleRSS(syncCtx, *pid, &peak)
	}

	var accepted, refused atomic.Int64
	ends := make([]time.Time, 0, 1<<16) // end of DATA of mail n, by n
	var endsMu sync.Mutex
	var next atomic.Int64
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer t.Stop()
		tick = t.C
	}
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			c, err := smtp.Dial(*smtpAddr)
			if err != nil {
				log.Printf("mailload: dial: %v", err)
				return
			}
			defer c.Close()
			if err := c.Hello("mailload.test"); err != nil {
				log.Printf("mailload: EHLO: %v", err)
				return
			}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				n := next.Add(1)
				msg := loadMail(fmt.Sprintf("Load %s-%d", run, n))
				end, err := sendOne(c, *from, *to, msg)
				if err != nil {
					refused.Add(1)
					log.Printf("mailload: mail %d: %v", n, err)
					if _, ok := err.(*smtp.SMTPError); !ok {
						return // the connection is gone
					}
					continue
				}
				accepted.Add(1)
				endsMu.Lock()
				for int64(len(ends)) <= n {
					ends = append(ends, time.Time{})
				}
				ends[n] = end
				endsMu.Unlock()
			}
		})
	}
	wg.Wait()
	sending := time.Since(start)
	acc := accepted.Load()
	fmt.Printf("accepted: %d mails in %.1fs over %d connections = %.1f/s (%d refused)\n", acc, sending.Seconds(), *conns, float64(acc)/sending.Seconds(), refused.Load())

	waitUntil := time.Now().Add(*wait)
	for seen.count() < int(acc) && time.Now().Before(waitUntil) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	cpuEnd := cpuTimes(*pid)
	stopSync()
	<-syncDone
	got, last := seen.snapshot()
	defer func() {
		if line := cpuPer(cpuStart, cpuEnd, len(got), "mail delivered (SMTP and delivery)"); line != "" {
			fmt.Println(line)
		}
	}()
	fmt.Printf("delivered: %d of %d events seen by the syncing client", len(got), acc)
	if len(got) > 0 {
		total := last.Sub(start)
		fmt.Printf(", the last %.1fs after the first send = %.1f/s", total.Seconds(), float64(len(got))/total.Seconds())
	}
	fmt.Println()
	// The two halves: while the load was sent, the homeserver shared the machine with the
	// SMTP load; after it, the backlog drains with the gateway's delivery alone, as the raw
	// loop ran.
	stopped := start.Add(sending)
	var during, after int
	for _, at := range got {
		if at.After(stopped) {
			after++
		} else {
			during++
		}
	}
	fmt.Printf("delivered while sending: %d in %.1fs = %.1f/s", during, sending.Seconds(), float64(during)/sending.Seconds())
	if after > 0 && last.After(stopped) {
		drain := last.Sub(stopped)
		fmt.Printf("; after: %d in %.1fs = %.1f/s", after, drain.Seconds(), float64(after)/drain.Seconds())
	}
	fmt.Println()
	if rawRate > 0 && len(got) > 0 {
		fmt.Printf("delivered / raw loop: %.2fx over the run", float64(len(got))/last.Sub(start).Seconds()/rawRate)
		fmt.Printf(", %.2fx while sending", float64(during)/sending.Seconds()/rawRate)
		if after > 0 && last.After(stopped) {
			fmt.Printf(", %.2fx after", float64(after)/last.Sub(stopped).Seconds()/rawRate)
		}
		fmt.Println()
	}
	var lat []time.Duration
	endsMu.Lock()
	for n, at := range got {
		if n < int64(len(ends)) && !ends[n].IsZero() {
			lat = append(lat, at.Sub(ends[n]))
		}
	}
	endsMu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		fmt.Printf("end of DATA to event: p50 %v, p99 %v, max %v (%d mails)\n",
			lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat))
	}
	if *pid > 0 {
		fmt.Printf("gateway peak RSS: %.1f MB\n", float64(peak.Load())/(1<<20))
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at end: %s", la)
	}
}

// sendOne sends one mail and returns when its DATA ended (the final dot was written).
func sendOne(c *smtp.Client, from, to, msg string) (time.Time, error) {
	if err := c.Mail(from, nil); err != nil {
		return time.Time{}, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return time.Time{}, err
	}
	w, err := c.Data()
	if err != nil {
		return time.Time{}, err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return time.Time{}, err
	}
	end := time.Now()
	return end, w.Close() // writes the dot and reads the reply
}

func login(ctx context.Context, hs, user, password string) (*mautrix.Client, error) {
	c, err := mautrix.NewClient(hs, "", "")
	if err != nil {
		return nil, err
	}
	_, err = c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, InitialDeviceDisplayName: "mailload"})
	return c, err
}

// joinRoom has inviter invite c into room, unless c is in it, and c join it.
func joinRoom(ctx context.Context, inviter, c *mautrix.Client, room id.RoomID) error {
	joined, err := c.JoinedRooms(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(joined.JoinedRooms, room) {
		return nil
	}
	if _, err := inviter.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: c.UserID}); err != nil {
		return fmt.Errorf("invite: %w", err)
	}
	_, err = c.JoinRoomByID(ctx, room)
	return err
}

// rawLoop sends plain messages into room one after another for d and returns how many.
func rawLoop(ctx context.Context, c *mautrix.Client, room id.RoomID, d time.Duration, loadMail func(subject string) string) (int, time.Duration) {
	start := time.Now()
	n := 0
	for time.Since(start) < d && ctx.Err() == nil {
		// The message the gateway makes of a load mail (without its sender check), so that
		// the homeserver stores events of the same size in both.
		msg, err := mailbridge.Convert(strings.NewReader(loadMail(fmt.Sprintf("Raw %d", n))))
		if err != nil {
			log.Fatalf("mailload: convert the raw loop's mail: %v", err)
		}
		if _, err := c.SendMessageEvent(ctx, room, msg.Type, msg.Content); err != nil {
			log.Printf("mailload: raw send: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n++
	}
	return n, time.Since(start)
}

// seen records when each mail of this run was seen in the room, by its number.
type seen struct {
	mu   sync.Mutex
	at   map[int64]time.Time
	last time.Time
}

func newSeen() *seen { return &seen{at: map[int64]time.Time{}} }

func (s *seen) add(n int64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.at[n]; !ok {
		s.at[n] = at
		s.last = at
	}
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

func (s *seen) snapshot() (map[int64]time.Time, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.at), s.last
}

// syncLoop long-polls the room's messages and records the mails of run as they arrive.
func syncLoop(ctx context.Context, c *mautrix.Client, room id.RoomID, run string, s *seen) {
	subject := regexp.MustCompile(`Subject: Load ` + regexp.QuoteMeta(run) + `-(\d+)\n`)
	since := ""
	var unread id.EventID // the newest event read since the marker was last moved
	var marked time.Time
	filter := `{"room":{"rooms":["` + string(room) + `"],"timeline":{"limit":1000,"types":["m.room.message"]},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}`
	for ctx.Err() == nil {
		resp, err := c.SyncRequest(ctx, 5000, since, filter, false, event.PresenceOffline)
		if err != nil {
			if ctx.Err() == nil {
				log.Printf("mailload: sync: %v", err)
				time.Sleep(time.Second)
			}
			continue
		}
		now := time.Now()
		if jr, ok := resp.Rooms.Join[room]; ok && len(jr.Timeline.Events) > 0 {
			if since != "" { // the first sync is the room's past
				for _, evt := range jr.Timeline.Events {
					body, _ := evt.Content.Raw["body"].(string)
					if m := subject.FindStringSubmatch(body); m != nil {
						n, _ := strconv.ParseInt(m[1], 10, 64)
						s.add(n, now)
					}
				}
			}
			unread = jr.Timeline.Events[len(jr.Timeline.Events)-1].ID
		}
		if unread != "" && time.Since(marked) >= time.Second {
			// A user reading along moves the read marker, about once a second here. The
			// homeserver counts a member's unread notifications in a room on each new event
			// (Dendrite: one COUNT over them), so a reader that never reads would make every
			// event cost more than the one before, whoever sends it.
			if err := c.SetReadMarkers(ctx, room, &mautrix.ReqSetReadMarkers{FullyRead: unread}); err != nil && ctx.Err() == nil {
				log.Printf("mailload: read marker: %v", err)
			}
			unread, marked = "", time.Now()
		}
		since = resp.NextBatch
	}
}

// sampleRSS records the peak resident memory of process pid, from /proc, until ctx ends.
func sampleRSS(ctx context.Context, pid int, peak *atomic.Int64) {
	for ctx.Err() == nil {
		if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
					if b := kb << 10; b > peak.Load() {
						peak.Store(b)
					}
				}
			}
			f.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
}
