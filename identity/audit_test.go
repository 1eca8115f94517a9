package identity_test

import (
	"path/filepath"
	"testing"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/pgtest"
	"github.com/samtalhq/samtal/matrix"
)

// TestAuditLogAppendOnly: entries are appended and listed, and the database itself refuses
// to change or delete them, on SQLite and on PostgreSQL.
func TestAuditLogAppendOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.db") }},
		{"postgres", func(t *testing.T) string {
			if testing.Short() {
				t.Skip("skipped in -short: starts PostgreSQL")
			}
			return pgtest.New(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			db, err := matrix.OpenDatabase(ctx, tc.dsn(t))
			must(t, err)
			defer db.Close()
			log, err := identity.OpenAuditLog(ctx, db)
			must(t, err)
			e := &identity.AuditEntry{RunID: "run-1", Actor: "@svc:a.test", Action: "kick", Target: "@bo:a.test",
				Room: "!r:a.test", Reason: "left", Source: "ldap", Outcome: "failed", Status: 403, ErrCode: "M_FORBIDDEN"}
			must(t, log.Append(ctx, e))
			must(t, log.Append(ctx, &identity.AuditEntry{RunID: "run-2", Actor: "@svc:a.test", Action: "kick", Target: "@cia:a.test", Reason: "left", Source: "ldap", Outcome: "ok"}))
			got, err := log.List(ctx, identity.AuditFilter{Target: "@bo:a.test"})
			must(t, err)
			if len(got) != 1 || got[0].Status != 403 || got[0].ErrCode != "M_FORBIDDEN" || got[0].Room != "!r:a.test" || got[0].At.IsZero() {
				t.Fatalf("List = %+v", got)
			}
			if all, _ := log.List(ctx, identity.AuditFilter{}); len(all) != 2 || all[0].ID > all[1].ID {
				t.Fatalf("List all = %+v, want two, oldest first", all)
			}
			if _, err := db.Exec(ctx, "UPDATE samtal_identity_audit SET outcome = 'ok'"); err == nil {
				t.Error("an UPDATE of the audit log went through")
			}
			if _, err := db.Exec(ctx, "DELETE FROM samtal_identity_audit"); err == nil {
				t.Error("a DELETE from the audit log went through")
			}
			if all, _ := log.List(ctx, identity.AuditFilter{}); len(all) != 2 || all[0].Outcome != "failed" {
				t.Fatalf("after the refused changes: %+v", all)
			}
		})
	}
}
