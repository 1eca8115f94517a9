package mailbridge

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestClaimPlanReadsNoBacklog: the queries of a claim read the queue index a room and a batch
// at a time: none scans the delivery or spool table or sorts what it read. Before the queue
// index, a claim read every pending delivery and its mail, and sorted them, to take 32: with
// 60,000 mails waiting that was most of the gateway's CPU while it drained a burst
// (BenchmarkClaimBacklog: 9 ms a claim at a backlog of 10,000, 0.2 ms after).
func TestClaimPlanReadsNoBacklog(t *testing.T) {
	s, _ := openTestSpool(t, "sqlite")
	spoolBacklog(t, s, 200, refillBelow)
	bad := regexp.MustCompile(`SCAN (samtal_mail_\w+|d|m)\b|TEMP B-TREE FOR ORDER BY`)
	for name, q := range map[string]struct {
		sql  string
		args []any
	}{
		"targets":  {queueTargetsQuery, nil},
		"full":     {fullTargets("$1"), []any{refillBelow}},
		"claim":    {claimTargetQuery, []any{benchRoom, time.Now().UnixMilli(), deliveryBatch}},
		"roomfull": {roomPostedQuery, []any{benchRoom}},
	} {
		rows, err := s.db.Query(t.Context(), "EXPLAIN QUERY PLAN "+q.sql, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		if bad.MatchString(joined) || !strings.Contains(joined, "samtal_mail_delivery_queue") {
			t.Errorf("%s: plan %q reads more than the queue index's rooms and batch", name, joined)
		}
	}
}

// TestClaimOrder: a claim takes the rooms with mail due in the order of their names, leaves
// out a full room and a mail not due yet, and takes each room's mail oldest first; the next
// attempt is the earliest of a room that takes more. On SQLite and on PostgreSQL (claims).
func TestClaimOrder(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			if dialect == "postgres" && testing.Short() {
				t.Skip("starts PostgreSQL")
			}
			s, _ := openTestSpool(t, dialect)
			ctx := t.Context()
			spool := func(room string) int64 {
				id, err := s.store(ctx, "a@agency.example", benchMail(), []target{{room: room, recipient: "r@agency.example"}})
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			b1, a1, a2, a3, b2 := spool("!b:hs"), spool("!a:hs"), spool("!a:hs"), spool("!a:hs"), spool("!b:hs")
			// !c is full: refillBelow posts unsent, and one more mail waiting.
			for i := range refillBelow {
				d := delivery{spoolID: spool("!c:hs"), target: "!c:hs", receivedAt: time.Now()}
				if err := s.posted(ctx, d, []int64{int64(i + 1)}, nil); err != nil {
					t.Fatal(err)
				}
			}
			spool("!c:hs")
			later := time.Now().Add(time.Hour)
			if err := s.retryLater(ctx, delivery{spoolID: a2, target: "!a:hs"}, later, "test"); err != nil {
				t.Fatal(err)
			}

			got, err := s.claim(ctx, time.Now(), 3)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{fmt.Sprint(a1, "!a:hs"), fmt.Sprint(a3, "!a:hs"), fmt.Sprint(b1, "!b:hs")}
			if fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
				t.Fatalf("claim(3) = %v, want %v", keysOf(got), want)
			}
			if s.claims.postgres {
				// The claimed ones are held for the lease: the next claim takes what is left.
				got, err = s.claim(ctx, time.Now(), 10)
				if err != nil {
					t.Fatal(err)
				}
				if want := []string{fmt.Sprint(b2, "!b:hs")}; fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
					t.Fatalf("second claim = %v, want %v", keysOf(got), want)
				}
				return
			}
			got, err = s.claim(ctx, time.Now(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if want := append(want, fmt.Sprint(b2, "!b:hs")); fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
				t.Fatalf("claim(10) = %v, want %v", keysOf(got), want)
			}
			// Delivered: what is left is a2, due in an hour, and !c's mail, held back.
			for _, d := range got {
				if err := s.delivered(ctx, d, 0); err != nil {
					t.Fatal(err)
				}
			}
			next, ok, err := s.nextAttempt(ctx)
			if err != nil || !ok || next.UnixMilli() != later.UnixMilli() {
				t.Fatalf("nextAttempt = %v, %v, %v; want %v (the full room's mail is not due)", next, ok, err, later)
			}
		})
	}
}

func keysOf(ds []delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprint(d.spoolID, d.target))
	}
	return out
}

// TestPostedWithSeveral: the confirmer's look-up of several outcomes at once returns each
// posted delivery they belong to once, with all its items, also when two of the outcomes are
// items of the same delivery; and reads the item index, not the backlog.
func TestPostedWithSeveral(t *testing.T) {
	s, _ := openTestSpool(t, "sqlite")
	ctx := t.Context()
	var ds []delivery
	for i := range 3 {
		id, err := s.store(ctx, "a@agency.example", benchMail(), []target{{room: benchRoom, recipient: "r@agency.example"}})
		if err != nil {
			t.Fatal(err)
		}
		d := delivery{spoolID: id, target: benchRoom, receivedAt: time.Now()}
		if err := s.posted(ctx, d, []int64{int64(10*i + 1), int64(10*i + 2)}, nil); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	got, err := s.postedWith(ctx, 2, 1, 21, 99)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{%d %s [1 2]} {%d %s [21 22]}]", ds[0].spoolID, benchRoom, ds[2].spoolID, benchRoom)
	var have []string
	for _, p := range got {
		have = append(have, fmt.Sprintf("{%d %s %v}", p.spoolID, p.target, p.items))
	}
	if "["+strings.Join(have, " ")+"]" != want {
		t.Fatalf("postedWith(2, 1, 21, 99) = %v, want %s", have, want)
	}
	rows, err := s.db.Query(ctx, "EXPLAIN QUERY PLAN "+postedWithQuery(2), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a, b, c int
		var detail string
		if err := rows.Scan(&a, &b, &c, &detail); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(detail, "SCAN") {
			t.Errorf("look-up plan step %q reads a whole table", detail)
		}
	}
}
