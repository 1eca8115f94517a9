package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/samtalhq/samtal/internal/storage"
	"github.com/samtalhq/samtal/matrix"
)

// runOutbox is `samtal outbox list|retry|drop`: what the outbox of a session holds, and what
// an operator does with items that failed. It works on the database alone, with no homeserver.
func runOutbox(ctx context.Context, e *env, args []string) error {
	const synopsis = "outbox list|retry|drop [flags] [ID...]"
	const details = `list   the session's items, oldest first, without their content (--state pending|sent|failed)
retry  make failed items pending again; a running client sends them within its lease period
       (30 s), otherwise the next start does, after what its room got meanwhile
drop   delete failed or sent items: the failure is acknowledged and the key may be used again`
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlags(e, "outbox")
		setUsage(fs, synopsis, details)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return nil
		}
		return fmt.Errorf("%w: want list, retry or drop", errUsage)
	}
	verb := args[0]
	fs := newFlags(e, "outbox "+verb)
	acct := accountFlags(fs)
	setUsage(fs, synopsis, details)
	state := fs.String("state", "", "list only items in this state: pending, sent or failed")
	asJSON := fs.Bool("json", false, "print one JSON object per item")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if !storage.IsPostgres(acct.db) {
		// Do not create a database just to find it empty.
		if _, err := os.Stat(strings.TrimPrefix(acct.db, "file:")); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no database at %s", errAuth, acct.db)
		}
	}
	db, _, err := acct.openDB(ctx) // the database exists: checked above
	if err != nil {
		return err
	}
	defer db.Close()
	switch verb {
	case "list":
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: list takes no arguments", errUsage)
		}
		items, err := matrix.ListOutbox(ctx, db, acct.session, *state)
		if err != nil {
			return err
		}
		return printOutbox(e, items, *asJSON)
	case "retry", "drop":
		ids, err := itemIDs(fs.Args())
		if err != nil {
			return err
		}
		for _, itemID := range ids {
			if verb == "retry" {
				err = matrix.RetryOutboxItem(ctx, db, acct.session, itemID)
			} else {
				err = matrix.DropOutboxItem(ctx, db, acct.session, itemID)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %d\n", map[string]string{"retry": "retried", "drop": "dropped"}[verb], itemID)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown outbox command %q (want list, retry or drop)", errUsage, verb)
}

func itemIDs(args []string) ([]int64, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: name the items by ID (see samtal outbox list)", errUsage)
	}
	var ids []int64
	for _, a := range args {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: %q is not an item ID", errUsage, a)
		}
		ids = append(ids, n)
	}
	return ids, nil
}

// outboxJSON is an item as `samtal outbox list --json` prints it.
type outboxJSON struct {
	ID        int64  `json:"id"`
	Room      string `json:"room_id"`
	Key       string `json:"idempotency_key,omitempty"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	EventID   string `json:"event_id,omitempty"`
	Error     string `json:"error,omitempty"`
	Status    int    `json:"status,omitempty"`  // the homeserver's HTTP status of a failure
	ErrCode   string `json:"errcode,omitempty"` // and its Matrix errcode
	CreatedAt string `json:"created_at"`
}

func printOutbox(e *env, items []matrix.OutboxItem, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, it := range items {
			j := outboxJSON{ID: it.ID, Room: string(it.Room), Key: it.IdempotencyKey, State: it.State, Attempts: it.Attempts,
				EventID: string(it.EventID), CreatedAt: it.CreatedAt.UTC().Format(time.RFC3339)}
			if it.Err != nil {
				j.Error = it.Err.Error()
				var he *matrix.HTTPError
				if errors.As(it.Err, &he) {
					j.Status, j.ErrCode = he.Status, he.ErrCode
				}
			}
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tATTEMPTS\tROOM\tKEY\tCREATED\tRESULT")
	for _, it := range items {
		res := string(it.EventID)
		if it.Err != nil {
			res = it.Err.Error()
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Attempts, it.Room, strconv.Quote(it.IdempotencyKey),
			it.CreatedAt.UTC().Format(time.RFC3339), res)
	}
	return w.Flush()
}
