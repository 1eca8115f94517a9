package e2ee_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/samtalhq/samtal/e2ee"
	"github.com/samtalhq/samtal/matrix"
)

// Once per account, on its first device: set up cross-signing and key backup, and hand the
// recovery key to whoever keeps the bot's secrets. It is shown this one time.
func ExampleMachine_Bootstrap() {
	ctx := context.Background()
	var c *matrix.Client // from matrix.New, logged in as case-bot
	key, err := e2ee.LoadOrCreatePickleKey("/etc/case-bot/pickle.key")
	if err != nil {
		log.Fatal(err)
	}
	m, err := e2ee.Enable(ctx, c, e2ee.Options{PickleKey: key})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	recoveryKey, err := m.Bootstrap(ctx, e2ee.PasswordAuth("case-bot", os.Getenv("CASE_BOT_PASSWORD")), e2ee.BootstrapOptions{})
	switch {
	case errors.Is(err, e2ee.ErrAlreadyBootstrapped):
		log.Fatal("the account is set up already: Recover with its recovery key")
	case errors.Is(err, e2ee.ErrAuthRejected):
		log.Fatal("check CASE_BOT_PASSWORD")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("Store this recovery key safely; it is not shown again:")
	fmt.Println(recoveryKey)
}

// On a new device of the account (a new server, a lost database): with the recovery key the
// device is trusted like the first one and reads the history it was not there for.
func ExampleMachine_Recover() {
	ctx := context.Background()
	var m *e2ee.Machine // from e2ee.Enable on the new device

	err := m.Recover(ctx, os.Getenv("CASE_BOT_RECOVERY_KEY"))
	if errors.Is(err, e2ee.ErrWrongRecoveryKey) {
		log.Fatal("that is not the account's recovery key")
	}
	if err != nil {
		log.Fatal(err)
	}
	st, err := m.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("device %s cross-signed: %v, backing up to version %s", st.DeviceID, st.DeviceSigned, st.BackupVersion)

	// Before a planned shutdown: the room keys of the last seconds go up too.
	if _, err := m.BackupNow(ctx); err != nil {
		log.Print(err)
	}
}
