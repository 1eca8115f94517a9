package storage

import (
	"context"
	"database/sql"
	"regexp"
	"sync"

	"go.mau.fi/util/dbutil"
)

// Statements runs a fixed set of hot queries as prepared statements, on SQLite. SQLite compiles
// a query every time it is run (the modernc driver keeps no statement cache), and for the short
// queries a mail or an outbox item runs a few times each, compiling was about a fifth of the
// gateway's CPU. A query is prepared once per connection and then only bound and stepped,
// inside a transaction of the context (dbutil.Database.DoTxn) as outside one.
//
// On PostgreSQL the queries are run as they are, through the database: the server plans them,
// and a connection pooler in transaction mode (PgBouncer) does not keep prepared statements.
//
// The set must be fixed, as the queries of a package's source are: every distinct query text
// stays prepared until Close. Queries use $1-style parameters, as with dbutil.
type Statements struct {
	db *dbutil.Database

	mu        sync.Mutex
	stmts     map[string]*sql.Stmt
	preparing map[string]bool // being prepared for the database in the background
	done      bool
}

// NewStatements returns the prepared statements of db. Close them before db.
func NewStatements(db *dbutil.Database) *Statements {
	return &Statements{db: db, stmts: map[string]*sql.Stmt{}, preparing: map[string]bool{}}
}

// positional matches dbutil's $1-style parameters, which SQLite writes ?1.
var positional = regexp.MustCompile(`\$(\d+)`)

// stmt returns query prepared for ctx's transaction, or for the database when ctx has none;
// nil when the database is not SQLite, so that the caller runs the query as it is.
func (s *Statements) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if s.db.Dialect != dbutil.SQLite {
		return nil, nil
	}
	s.mu.Lock()
	st, done := s.stmts[query], s.done
	s.mu.Unlock()
	if done {
		return nil, nil // closed: run as it is
	}
	txn, inTxn := s.db.Execable(ctx).(*dbutil.LoggingTxn)
	if inTxn {
		if st == nil {
			// Prepared on the transaction's own connection for now: preparing for the
			// database takes a connection of the pool, and with the pool's connections
			// held by transactions that wait for this one's write lock, that wait went
			// round until the busy timeout (SQLITE_BUSY). It is prepared for the database
			// apart, for the next time.
			s.prepareLater(query)
			return txn.UnderlyingTx.PrepareContext(ctx, positional.ReplaceAllString(query, "?$1"))
		}
		// The transaction's own copy, on its connection: closed with the transaction, and
		// prepared once per connection (database/sql reuses it).
		return txn.UnderlyingTx.StmtContext(ctx, st), nil
	}
	if st == nil {
		prepared, err := s.db.RawDB.PrepareContext(ctx, positional.ReplaceAllString(query, "?$1"))
		if err != nil {
			return nil, err
		}
		if st = s.keep(query, prepared); st == nil {
			return nil, nil // closed meanwhile
		}
	}
	return st, nil
}

// keep caches prepared as query's statement and returns the cached one (prepared, or one
// prepared meanwhile by another caller); nil after Close.
func (s *Statements) keep(query string, prepared *sql.Stmt) *sql.Stmt {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.preparing, query)
	st := s.stmts[query]
	if st == nil && !s.done {
		s.stmts[query], st = prepared, prepared
	} else {
		_ = prepared.Close()
	}
	if s.done {
		return nil
	}
	return st
}

// prepareLater prepares query for the database in the background, once.
func (s *Statements) prepareLater(query string) {
	s.mu.Lock()
	if s.done || s.preparing[query] || s.stmts[query] != nil {
		s.mu.Unlock()
		return
	}
	s.preparing[query] = true
	s.mu.Unlock()
	go func() {
		prepared, err := s.db.RawDB.PrepareContext(context.Background(), positional.ReplaceAllString(query, "?$1"))
		if err != nil {
			s.mu.Lock()
			delete(s.preparing, query)
			s.mu.Unlock()
			return // the next use in a transaction tries again
		}
		s.keep(query, prepared)
	}()
}

// Exec runs a statement that returns no rows.
func (s *Statements) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.db.Exec(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

// Query runs a query that returns rows.
func (s *Statements) Query(ctx context.Context, query string, args ...any) (dbutil.Rows, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.db.Query(ctx, query, args...)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err // not a nil *sql.Rows in a non-nil interface
	}
	return rows, nil
}

// QueryRow runs a query that returns at most one row; errors are deferred to Scan.
func (s *Statements) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, query)
	if err != nil || st == nil {
		// An error here is the prepare's: the database's own QueryRow reports it from Scan.
		return s.db.QueryRow(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Close closes the prepared statements; later calls run their queries unprepared.
func (s *Statements) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	var first error
	for q, st := range s.stmts {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
		delete(s.stmts, q)
	}
	return first
}
