package identity_test

import (
	"testing"

	"github.com/samtalhq/samtal/internal/oidctest"
)

// BenchmarkSendRefresh measures a Send (to the homeserver's acceptance) through the Transport
// with a good token, and with a token the homeserver refuses before each Send, so that every
// Send pays a refresh: the difference is the added latency of a transparent refresh.
func BenchmarkSendRefresh(b *testing.B) {
	quietOP(b)
	for _, refresh := range []bool{false, true} {
		name := "token-good"
		if refresh {
			name = "token-refused-each-send"
		}
		b.Run(name, func(b *testing.B) {
			o := oidctest.Start(b)
			f := oidctest.StartFront(b, o)
			db := openDB(b)
			c, _ := oauthClient(b, f, db)
			if err := sendAndWait(b, c, "warm"); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if refresh {
					b.StopTimer()
					f.ExpireAll()
					b.StartTimer()
				}
				if err := sendAndWait(b, c, "x"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
