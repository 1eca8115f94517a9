// Command dendrite finds or builds the Dendrite binary that matrixtest uses and prints its
// path, so that a test script can build it once before tests run in parallel.
//
//	export SAMTAL_DENDRITE=$(go run ./internal/tools/dendrite)
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/samtalhq/samtal/internal/homeserver"
)

func main() {
	log.SetFlags(0)
	bin, err := homeserver.FindDendrite(context.Background(), func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(bin)
}
