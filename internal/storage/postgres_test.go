package storage

import (
	"testing"

	"github.com/samtalhq/samtal/internal/pgtest"
)

func TestOpenPostgres(t *testing.T) {
	dsn := pgtest.New(t)
	db, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Dialect.String() != "postgres" {
		t.Fatalf("dialect %s", db.Dialect)
	}
	var one int
	if err := db.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query: %d, %v", one, err)
	}
}
