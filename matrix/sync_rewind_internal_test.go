package matrix

import (
	"fmt"
	"path/filepath"
	"testing"
	"testing/fstest"

	"go.mau.fi/util/dbutil"

	"github.com/samtalhq/samtal/internal/storage"
)

// TestSyncPositionUpgrade: a database made by the code before the rewind point was stored (the
// matrix tables at v2) keeps its sync token through the upgrade, with no rewind point, and then
// stores and loads one.
func TestSyncPositionUpgrade(t *testing.T) {
	ctx := t.Context()
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "old.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	old := fstest.MapFS{}
	for _, name := range []string{"00-latest.sql", "01-outbox-v2.sql"} {
		b, err := schemaFS.ReadFile("schema/" + name)
		if err != nil {
			t.Fatal(err)
		}
		old["schema/"+name] = &fstest.MapFile{Data: b}
	}
	oldDB := db.Child(versionTable, dbutil.BuildUpgradeTable().WithFSPath(old, "schema").Finish(), dbutil.NoopLogger)
	if err := oldDB.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := oldDB.Exec(ctx, `INSERT INTO samtal_sync (session, next_batch) VALUES ('bot', 's1_old')`); err != nil {
		t.Fatal(err)
	}

	cur, err := upgradeDB(ctx, db)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	token, back, err := loadPosition(ctx, cur, "bot")
	if err != nil {
		t.Fatal(err)
	}
	if token != "s1_old" || back.since != "" || back.seen != nil {
		t.Fatalf("after the upgrade: token %q, rewind point %q %v; want s1_old and none", token, back.since, back.seen)
	}

	prev, seen, err := rewind{since: "s0", seen: map[string]bool{"$b": true, "$a": true}}.stored()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cur.Exec(ctx, `UPDATE samtal_sync SET prev_batch = $1, prev_seen = $2 WHERE session = 'bot'`, prev, seen); err != nil {
		t.Fatal(err)
	}
	token, back, err = loadPosition(ctx, cur, "bot")
	if err != nil {
		t.Fatal(err)
	}
	if token != "s1_old" || back.since != "s0" || len(back.seen) != 2 || !back.seen["$a"] || !back.seen["$b"] {
		t.Errorf("stored rewind point loads as token %q, %q %v", token, back.since, back.seen)
	}
}

// TestRewindAfter: what the rewind point is after each kind of committed batch, and what of it
// is stored.
func TestRewindAfter(t *testing.T) {
	at := rewind{since: "s1", seen: map[string]bool{"$a": true}}
	many := make([]string, maxStoredSeen+1)
	for i := range many {
		many[i] = fmt.Sprintf("$e%d", i)
	}
	for _, tc := range []struct {
		name      string
		from      string
		rewound   bool
		keys      []string
		wantSince string
		wantSeen  int
		stored    bool
	}{
		{"first sync", "", false, []string{"$x"}, "", 0, false},
		{"next batch", "s2", false, []string{"$b"}, "s2", 1, true},
		{"rewound batch", "s1", true, []string{"$b"}, "s1", 2, true},
		{"too many to store", "s2", false, many, "s2", len(many), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := at.after(tc.from, tc.rewound, tc.keys)
			if next.since != tc.wantSince || len(next.seen) != tc.wantSeen {
				t.Errorf("after: %q with %d events, want %q with %d", next.since, len(next.seen), tc.wantSince, tc.wantSeen)
			}
			if len(at.seen) != 1 {
				t.Errorf("after changed the rewind point it started from: %v", at.seen)
			}
			prev, _, err := next.stored()
			if err != nil {
				t.Fatal(err)
			}
			if (prev != "") != tc.stored {
				t.Errorf("stored %q, want stored=%v", prev, tc.stored)
			}
		})
	}
}
