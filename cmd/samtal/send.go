package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // image sizes for --file
	_ "image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/matrix"
)

// Limits on what send reads: a message longer than an event holds is sent shortened with the
// full text attached, but it is still read into memory first.
const (
	maxStdinText = 16 << 20
	maxFileSize  = 100 << 20
)

// runSend sends a message or a file into a room through the outbox.
func runSend(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "send")
	acct := accountFlags(fs)
	asJSON := fs.Bool("json", false, `print {"id":...,"event_id":...,"room_id":...} instead of the event ID`)
	markdown := fs.Bool("markdown", false, "render TEXT as Markdown")
	notice := fs.Bool("notice", false, "send an m.notice, the message type for automated senders")
	file := fs.String("file", "", "upload the file at `PATH` and send it instead of a text")
	key := fs.String("key", "", "idempotency `KEY`, such as case-4711/update-3: a second send with the same key sends nothing")
	noWait := fs.Bool("no-wait", false, "store the message in the outbox and exit without waiting for it to be sent")
	timeout := fs.Duration("timeout", time.Minute, "give up when the homeserver has not taken the message after this long; 0 waits as long as it takes")
	setUsage(fs, "send [flags] ROOM [TEXT...]", `Sends TEXT into ROOM, a room ID (!...) or alias (#...) of a room the account is in, and
prints the event ID. TEXT is the arguments after ROOM joined by spaces, or standard input
when TEXT is "-" or absent and standard input is not a terminal. Flags may come anywhere;
a word of TEXT that starts with "-" is taken for a flag unless it comes after "--".

The message goes through the outbox in the database: it survives an outage and is sent once.
If it is not sent in --timeout, or with --no-wait, it stays there and goes out with the next
samtal command on the same database and session. With --no-wait the outbox ID is printed.

In end-to-end encrypted rooms the message (or file) is encrypted; the device's keys are kept
in the database, encrypted with the pickle key (see --pickle-key). With --no-e2ee, encrypted
rooms are refused rather than sent plaintext.

`+credentialsHelp)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: missing ROOM", errUsage)
	}
	roomArg, words := rest[0], rest[1:]
	if err := checkRoomArg(roomArg); err != nil {
		return err
	}
	if *file != "" && (*markdown || *notice || len(words) > 0) {
		return fmt.Errorf("%w: --file takes no TEXT, --markdown or --notice", errUsage)
	}
	req := sendRequest{room: roomArg, markdown: *markdown, notice: *notice, key: *key, wait: !*noWait}
	if *file == "" {
		req.text, err = messageText(e, words)
	} else {
		req.file, err = readFile(*file)
	}
	if err != nil {
		return err
	}

	sendCtx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	r, err := req.send(sendCtx, e, acct)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && r.ID != 0:
		return fmt.Errorf("%w: the message was not sent within %s; it stays in the outbox (id %d) and goes out with the next samtal command on this session",
			errUnavailable, *timeout, r.ID)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return fmt.Errorf("%w: no answer from the homeserver within %s: %w", errUnavailable, *timeout, err)
	case err != nil:
		return err
	case *asJSON:
		return json.NewEncoder(e.stdout).Encode(r)
	case r.EventID == "":
		_, err = fmt.Fprintln(e.stdout, r.ID)
	default:
		_, err = fmt.Fprintln(e.stdout, r.EventID)
	}
	return err
}

// sendRequest is one send, its input read and checked.
type sendRequest struct {
	room             string // ID or alias
	text             string
	file             *matrix.Attachment // instead of text
	markdown, notice bool
	key              string
	wait             bool
}

// send sends the request as the account. The result has the outbox ID once the message is
// queued, even when waiting for it fails.
func (req sendRequest) send(ctx context.Context, e *env, acct *account) (sendResult, error) {
	c, done, err := acct.open(ctx, e)
	if err != nil {
		return sendResult{}, err
	}
	defer done()
	rooms, err := resolveRooms(ctx, c, []string{req.room})
	if err != nil {
		return sendResult{}, err
	}
	opts := matrix.SendOptions{IdempotencyKey: req.key}
	var p *matrix.Pending
	if req.file != nil {
		p, err = c.SendFile(ctx, rooms[0], *req.file, opts)
	} else {
		msg := matrix.Text(req.text)
		if req.markdown {
			msg = matrix.Markdown(req.text)
		}
		if req.notice {
			msg = msg.AsNotice()
		}
		p, err = c.Send(ctx, rooms[0], msg, opts)
	}
	if errors.Is(err, matrix.ErrEncryptionRequired) {
		return sendResult{}, fmt.Errorf("%w; run without --no-e2ee (and with a pickle key, --pickle-key) to encrypt", err)
	}
	if err != nil {
		return sendResult{}, err
	}
	r := sendResult{ID: p.ID, RoomID: rooms[0], Duplicate: p.Duplicate}
	if req.wait {
		r.EventID, err = p.Wait(ctx)
	}
	if errors.Is(err, matrix.ErrEncryptionRequired) {
		// Found out when the outbox sent it, the usual case: Send asks the server nothing.
		err = fmt.Errorf("%w; run without --no-e2ee (and with a pickle key, --pickle-key) to encrypt", err)
	}
	return r, err
}

type sendResult struct {
	ID        int64      `json:"id"`                 // the outbox item
	EventID   id.EventID `json:"event_id,omitempty"` // empty with --no-wait
	RoomID    id.RoomID  `json:"room_id"`
	Duplicate bool       `json:"duplicate,omitempty"` // an earlier send had the same --key
}

// messageText is the text to send: the words joined by spaces, or standard input.
func messageText(e *env, words []string) (string, error) {
	var text string
	switch {
	case len(words) == 1 && words[0] == "-", len(words) == 0 && !isTerminal(e.stdin):
		if e.stdin == nil {
			return "", fmt.Errorf("%w: no TEXT and nothing on standard input", errUsage)
		}
		b, err := io.ReadAll(io.LimitReader(e.stdin, maxStdinText+1))
		if err != nil {
			return "", fmt.Errorf("read standard input: %w", err)
		}
		if len(b) > maxStdinText {
			return "", fmt.Errorf("%w: standard input is longer than %d MiB", errUsage, maxStdinText>>20)
		}
		text = strings.TrimRight(string(b), "\r\n")
	case len(words) == 0:
		return "", fmt.Errorf("%w: missing TEXT (or pipe it on standard input)", errUsage)
	default:
		text = strings.Join(words, " ")
	}
	if strings.TrimSpace(text) == "" {
		return "", fmt.Errorf("%w: the message is empty", errUsage)
	}
	return text, nil
}

// isTerminal reports whether r is a terminal, or absent: then nothing is piped in.
func isTerminal(r io.Reader) bool {
	if r == nil {
		return true
	}
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// readFile reads the file at path, before the client is opened so that a bad path is found
// before any request. Its MIME type comes from the extension, else from the content, and says
// how clients show it; an image's pixel size lets them reserve space before it loads.
func readFile(path string) (*matrix.Attachment, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", errUsage, path)
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d MiB", errUsage, path, maxFileSize>>20)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	att := &matrix.Attachment{Name: filepath.Base(path), Data: data, MimeType: mime.TypeByExtension(filepath.Ext(path))}
	if att.MimeType == "" {
		att.MimeType = http.DetectContentType(data)
	}
	switch major, _, _ := strings.Cut(att.MimeType, "/"); major {
	case "image":
		att.Kind = matrix.ImageKind
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
			att.Width, att.Height = cfg.Width, cfg.Height
		}
	case "video":
		att.Kind = matrix.VideoKind
	case "audio":
		att.Kind = matrix.AudioKind
	}
	return att, nil
}
