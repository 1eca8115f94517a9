package matrix

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Attachment is a file to send into a room.
type Attachment struct {
	Name     string    // file name shown to readers; required
	MimeType string    // "" guesses from Name, then from the data
	Data     []byte    // the file
	Kind     MediaKind // FileKind (the zero value), ImageKind, VideoKind or AudioKind
	Width    int       // for images: pixel size, optional
	Height   int
}

// DefaultMaxDownload bounds Download when the caller passes no limit.
const DefaultMaxDownload = 100 << 20

// SendFile uploads the attachment and queues the file message, like Send. In an end-to-end
// encrypted room the file is encrypted before upload (the key travels in the encrypted event),
// and the client must have encryption (ErrEncryptionRequired otherwise). A file larger than the
// homeserver's upload limit is refused with ErrTooLarge before anything is uploaded.
//
// With an idempotency key that was used before, nothing is uploaded again.
func (c *Client) SendFile(ctx context.Context, room id.RoomID, att Attachment, opts SendOptions) (*Pending, error) {
	if err := ValidateRoomID(room); err != nil {
		return nil, err
	}
	if strings.TrimSpace(att.Name) == "" || strings.ContainsAny(att.Name, "/\\\x00") {
		return nil, fmt.Errorf("%w: attachment needs a plain file name, got %q", ErrInvalidContent, att.Name)
	}
	if err := validKey(opts.IdempotencyKey); err != nil {
		return nil, err
	}
	if opts.IdempotencyKey != "" {
		if p, err := c.outbox.byKey(ctx, opts.IdempotencyKey); p != nil || err != nil {
			return p, err
		}
	}
	encrypted, err := c.checkCanSend(ctx, room)
	if err != nil {
		return nil, err
	}
	msg, err := c.upload(ctx, att, encrypted)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, room, msg, opts)
}

// upload puts data on the media repository, encrypted when asked, and returns the message that
// refers to it.
func (c *Client) upload(ctx context.Context, att Attachment, encrypt bool) (Message, error) {
	size := int64(len(att.Data))
	if limit := c.uploadLimit(ctx); limit > 0 && size > limit {
		return Message{}, fmt.Errorf("%w: %s is %d bytes; the homeserver accepts at most %d", ErrTooLarge, att.Name, size, limit)
	}
	mimeType := att.MimeType
	if mimeType == "" {
		mimeType = mime.TypeByExtension(filepath.Ext(att.Name))
	}
	if mimeType == "" {
		mimeType = http.DetectContentType(att.Data)
	}
	var msg Message
	if encrypt {
		ef := attachment.NewEncryptedFile()
		cipher := make([]byte, len(att.Data))
		copy(cipher, att.Data)
		ef.EncryptInPlace(cipher)
		// The media repository sees only ciphertext: no name, no type.
		up, err := c.mx.UploadBytes(ctx, cipher, "application/octet-stream")
		if err != nil {
			return Message{}, fmt.Errorf("matrix: upload %s: %w", att.Name, wrapErr(err))
		}
		msg = EncryptedFile(att.Kind, &event.EncryptedFileInfo{EncryptedFile: keysOnly(ef), URL: up.ContentURI.CUString()}, att.Name, mimeType, size)
	} else {
		up, err := c.mx.UploadBytesWithName(ctx, att.Data, mimeType, att.Name)
		if err != nil {
			return Message{}, fmt.Errorf("matrix: upload %s: %w", att.Name, wrapErr(err))
		}
		msg = File(att.Kind, up.ContentURI.CUString(), att.Name, mimeType, size)
	}
	if att.Kind == ImageKind && att.Width > 0 && att.Height > 0 {
		msg = msg.WithImageSize(att.Width, att.Height)
	}
	return msg, nil
}

// uploadLimit asks the homeserver once for its upload limit (0: none said).
func (c *Client) uploadLimit(ctx context.Context) int64 {
	c.mediaOnce.Do(func() {
		cfg, err := c.mx.GetMediaConfig(ctx)
		if err == nil && cfg != nil {
			c.mediaLimit = cfg.UploadSize
		}
		// A server that does not answer the config endpoint gets no client-side limit; the
		// upload itself then fails with M_TOO_LARGE if it is too large.
	})
	return c.mediaLimit
}

// Download fetches the file a message refers to through the authenticated media API, and
// decrypts it (checking its hash) when the message carries an encrypted file. It reads at most
// max bytes (0 means DefaultMaxDownload) and fails with ErrTooLarge beyond that.
func (c *Client) Download(ctx context.Context, content *event.MessageEventContent, max int64) ([]byte, error) {
	if content == nil {
		return nil, fmt.Errorf("%w: no content", ErrInvalidContent)
	}
	if max <= 0 {
		max = DefaultMaxDownload
	}
	uriString := content.URL
	if content.File != nil {
		uriString = content.File.URL
	}
	uri, err := uriString.Parse()
	if err != nil || uri.IsEmpty() {
		return nil, fmt.Errorf("%w: %q is not an mxc:// URI", ErrInvalidContent, uriString)
	}
	resp, err := c.mx.Download(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("matrix: download %s: %w", uri, wrapErr(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("matrix: download %s: %w", uri, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, uri, max)
	}
	if content.File != nil {
		ef := keysOnly(&content.File.EncryptedFile)
		if err := ef.DecryptInPlace(data); err != nil {
			return nil, fmt.Errorf("matrix: decrypt %s: %w", uri, err)
		}
	}
	return data, nil
}

// keysOnly copies an encrypted file's published fields without mautrix's cache of decoded
// keys: the cache left by encrypting lacks the hash, so decrypting with it would fail, and
// decrypting must not write into the caller's event.
func keysOnly(ef *attachment.EncryptedFile) attachment.EncryptedFile {
	return attachment.EncryptedFile{Key: ef.Key, InitVector: ef.InitVector, Hashes: ef.Hashes, Version: ef.Version}
}

// mediaState is the part of Client that caches the media configuration.
type mediaState struct {
	mediaOnce  sync.Once
	mediaLimit int64
}
