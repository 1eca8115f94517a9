package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/samtalhq/samtal/federation"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// BenchmarkCheck40 checks 40 members: 3 real Dendrites and 37 fault servers (13 that accept
// connections and never answer, 12 that refuse them, 12 that answer each request after half a
// second). With the default concurrency all run at once, so one check of all takes about the
// per-server timeout (3 s here); with 8 at a time the silent ones queue. See
// docs/benchmarks.md.
func BenchmarkCheck40(b *testing.B) {
	fed := matrixtest.NewFederation(b, 3, matrixtest.DistinctHosts())
	env := &checkEnv{roots: newCheckEnvRoots(b, fed...), routes: map[string]string{}}
	servers := []string{fed[0].ServerName, fed[1].ServerName, fed[2].ServerName}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 37 {
		name := fmt.Sprintf("m%d.localhost:8448", i)
		switch i % 3 {
		case 0:
			env.routes[name] = silentListener(b)
		case 1:
			env.routes[name] = closedPortTB(b)
		case 2:
			slow := keyServer(b, name, pub, priv)
			env.routes[name] = env.faultServerTB(b, []string{fmt.Sprintf("m%d.localhost", i)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(500 * time.Millisecond)
				slow.ServeHTTP(w, r)
			}))
		}
		servers = append(servers, name)
	}
	opts := env.options()
	opts.Timeout = 3 * time.Second
	opts.Client = fed[0].NewClient(b, "checker")
	for _, conc := range []int{0, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			o := opts
			o.Concurrency = conc
			b.ReportAllocs()
			for b.Loop() {
				reports := federation.Check(context.Background(), servers, o)
				passed := 0
				for _, r := range reports {
					if r.OK {
						passed++
					}
				}
				if passed != 3 {
					b.Fatalf("%d servers passed, want the 3 real ones", passed)
				}
			}
		})
	}
}
