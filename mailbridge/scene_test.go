package mailbridge_test

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/samtalhq/samtal/mailbridge"
	"github.com/samtalhq/samtal/matrix"
	"github.com/samtalhq/samtal/matrix/matrixtest"
)

// scene is the stage most gateway tests play on: a homeserver, the gateway's bot "mailbot",
// an officer who has joined the bot's room for cases@agency.example, and a running gateway
// whose mail the officer's inbox records.
type scene struct {
	srv     *matrixtest.Server
	bot     *matrix.Client
	officer *matrix.Client
	room    id.RoomID // where cases@agency.example goes; not encrypted
	router  *mailbridge.Router
	g       *mailbridge.Gateway
	addr    string               // the gateway's SMTP address
	inbox   *matrixtest.Recorder // what the officer receives in room
}

// newScene sets the stage on a homeserver started with serverOpts and starts a gateway with
// opts (startGateway's defaults), its Client the bot and its Router the scene's.
func newScene(t *testing.T, opts mailbridge.Options, serverOpts ...matrixtest.Option) *scene {
	t.Helper()
	s := &scene{srv: matrixtest.NewServer(t, serverOpts...)}
	s.bot = s.srv.NewClient(t, "mailbot")
	s.officer = s.srv.NewClient(t, "officer")
	s.room = roomWith(t, s.bot, s.officer, false)
	router, err := mailbridge.NewRouter(mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	if err != nil {
		t.Fatal(err)
	}
	s.router = router
	opts.Client, opts.Router = s.bot, s.router
	s.g, s.addr = startGateway(t, opts)
	s.inbox = matrixtest.NewRecorder(t, s.officer, s.room)
	return s
}

// send sends one mail to cases@agency.example on a new connection, failing the test unless
// the gateway answers 250.
func (s *scene) send(t *testing.T, from, raw string) {
	t.Helper()
	if err := send(dial(t, s.addr), from, []string{"cases@agency.example"}, raw); err != nil {
		t.Fatal(err)
	}
}
