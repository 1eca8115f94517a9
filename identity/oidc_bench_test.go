package identity_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/samtalhq/samtal/identity"
	"github.com/samtalhq/samtal/internal/oidctest"
)

// BenchmarkVerifyIDToken compares Provider.Verify with go-oidc's own verifier on the same
// token and the same provider, each with its JWKS cached (fetched before the timer starts).
func BenchmarkVerifyIDToken(b *testing.B) {
	quietOP(b)
	o := oidctest.Start(b, storage.WebClient("web", "web-secret", "http://127.0.0.1/callback"))
	now := time.Now()
	raw := o.Sign(b, nil, map[string]any{"iss": o.Issuer, "sub": "id-jane", "aud": "web", "azp": "web",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()})
	ctx := context.Background()

	b.Run("samtal", func(b *testing.B) {
		p, err := identity.Connect(ctx, identity.ProviderOptions{Issuer: o.Issuer, ClientID: "web"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Verify(ctx, raw, ""); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Verify(ctx, raw, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-oidc", func(b *testing.B) {
		p, err := oidc.NewProvider(ctx, o.Issuer)
		if err != nil {
			b.Fatal(err)
		}
		v := p.Verifier(&oidc.Config{ClientID: "web"})
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// quietOP silences the example OP, which logs each request to the default logger, so that
// its lines do not interleave with the benchmark's results.
func quietOP(b *testing.B) {
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { slog.SetDefault(prev) })
}
