package storage

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// ErrInvalidDSN is returned by Open when a pool parameter of a PostgreSQL URL has a value it
// cannot use; the error names the parameter.
var ErrInvalidDSN = errors.New("storage: invalid database URL")

// Connection pool defaults for PostgreSQL. Each instance of a gateway or bot opens at most
// DefaultMaxConns connections, so that several instances (and the homeserver's own database
// users) stay within PostgreSQL's max_connections, 100 by default, of which 3 are reserved:
// four instances at the default take 80. Work beyond the limit queues in the pool instead of
// failing at the server with "too many clients".
const (
	// DefaultMaxConns is the most connections an opened PostgreSQL database holds at once
	// (URL parameter pool_max_conns). Idle connections are kept up to the same number.
	DefaultMaxConns = 20
	// DefaultMaxConnIdleTime is how long a connection may stay idle before it is closed
	// (pool_max_conn_idle_time), so that a quiet instance gives its connections back.
	DefaultMaxConnIdleTime = 5 * time.Minute
	// DefaultMaxConnLifetime is how long a connection is used at most (pool_max_conn_lifetime),
	// so that connections move to a server that came back or was failed over to.
	DefaultMaxConnLifetime = time.Hour
)

// maxPoolConns bounds pool_max_conns: more than PostgreSQL's default max_connections is a typo.
const maxPoolConns = 1000

// pool is how many connections a database may hold, and for how long.
type pool struct {
	maxConns    int
	maxIdleTime time.Duration
	maxLifetime time.Duration
}

// poolParams takes the pool parameters out of a PostgreSQL URL and returns the URL without
// them: lib/pq would send them to the server as settings, which it refuses. The names are
// pgxpool's, so a URL written for pgx means the same here.
func poolParams(dsn string) (string, pool, error) {
	p := pool{maxConns: DefaultMaxConns, maxIdleTime: DefaultMaxConnIdleTime, maxLifetime: DefaultMaxConnLifetime}
	u, err := url.Parse(dsn)
	if err != nil {
		// Not something we can take apart; the driver reports what is wrong with it.
		return dsn, p, nil
	}
	q := u.Query()
	found := false
	if v, ok := take(q, "pool_max_conns"); ok {
		found = true
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPoolConns {
			return "", p, fmt.Errorf("%w: pool_max_conns=%q: want a whole number from 1 to %d", ErrInvalidDSN, v, maxPoolConns)
		}
		p.maxConns = n
	}
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{{"pool_max_conn_idle_time", &p.maxIdleTime}, {"pool_max_conn_lifetime", &p.maxLifetime}} {
		v, ok := take(q, d.name)
		if !ok {
			continue
		}
		found = true
		t, err := time.ParseDuration(v)
		if err != nil || t < 0 {
			return "", p, fmt.Errorf("%w: %s=%q: want a duration such as 5m (0 means no limit)", ErrInvalidDSN, d.name, v)
		}
		*d.to = t
	}
	if !found {
		return dsn, p, nil
	}
	u.RawQuery = q.Encode()
	return u.String(), p, nil
}

// take removes key from q and returns its last value.
func take(q url.Values, key string) (string, bool) {
	vs, ok := q[key]
	if !ok {
		return "", false
	}
	q.Del(key)
	return vs[len(vs)-1], true
}

func (p pool) apply(db *sql.DB) {
	db.SetMaxOpenConns(p.maxConns)
	db.SetMaxIdleConns(p.maxConns)
	db.SetConnMaxIdleTime(p.maxIdleTime)
	db.SetConnMaxLifetime(p.maxLifetime)
}
