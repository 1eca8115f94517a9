package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path/filepath"
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
	// Thread, when set, posts the file in the thread that starts with this event (m.thread).
	Thread id.EventID
}

// DefaultMaxDownload bounds Download when the caller passes no limit.
const DefaultMaxDownload = 100 << 20

// upload puts data on the media repository, encrypted when asked, and returns the message that
// refers to it. It makes each request once: the outbox, which calls it, has its own retries.
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
		up, err := c.send.UploadBytes(ctx, cipher, "application/octet-stream")
		if err != nil {
			return Message{}, fmt.Errorf("matrix: upload %s: %w", att.Name, wrapErr(err))
		}
		msg = EncryptedFile(att.Kind, &event.EncryptedFileInfo{EncryptedFile: keysOnly(ef), URL: up.ContentURI.CUString()}, att.Name, mimeType, size)
	} else {
		up, err := c.send.UploadBytesWithName(ctx, att.Data, mimeType, att.Name)
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

// uploadLimit asks the homeserver for its upload limit (0: none said) until it answers once.
func (c *Client) uploadLimit(ctx context.Context) int64 {
	c.mediaMu.Lock()
	defer c.mediaMu.Unlock()
	if c.mediaKnown {
		return c.mediaLimit
	}
	cfg, err := c.send.GetMediaConfig(ctx)
	if err == nil && cfg != nil {
		c.mediaLimit, c.mediaKnown = cfg.UploadSize, true
	} else if he := (*HTTPError)(nil); errors.As(wrapErr(err), &he) {
		// A server that refuses the config endpoint gets no client-side limit; the upload
		// itself then fails with M_TOO_LARGE if it is too large. One that cannot be reached
		// is asked again next time.
		c.mediaKnown = true
	}
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
	mediaMu    sync.Mutex
	mediaKnown bool
	mediaLimit int64
}
