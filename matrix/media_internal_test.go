package matrix

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/event"
)

// TestEncryptedUploadRoundTrip: what an encrypted room gets is ciphertext on the server and the
// original after Download; a tampered file is refused.
func TestEncryptedUploadRoundTrip(t *testing.T) {
	srv := newTestServer(t)
	c := newTestAccount(t, srv, "alice").open(OutboxOptions{})
	secret := []byte("personnummer 19121212-1212")
	msg, err := c.upload(context.Background(), Attachment{Name: "id.txt", Data: secret}, true)
	if err != nil {
		t.Fatal(err)
	}
	content := msg.Content.(*event.MessageEventContent)
	if content.File == nil || content.URL != "" {
		t.Fatalf("encrypted upload should use file, not url: %+v", content)
	}
	uri, _ := content.File.URL.Parse()
	onServer, err := c.mx.DownloadBytes(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(onServer, secret) {
		t.Fatal("the server stores the plaintext")
	}
	got, err := c.Download(t.Context(), content, 0)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Download: %q, %v", got, err)
	}
	tampered := *content
	f := *content.File
	f.Hashes.SHA256 = "AAAA" + f.Hashes.SHA256[4:]
	tampered.File = &f
	if _, err := c.Download(t.Context(), &tampered, 0); err == nil {
		t.Fatal("a file whose hash does not match was accepted")
	}
	if _, err := c.Download(t.Context(), content, 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("download over the limit: %v, want ErrTooLarge", err)
	}
}
