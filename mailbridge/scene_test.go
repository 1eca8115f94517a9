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
	secure  id.RoomID // newEncryptedScene's encrypted room, where secure@agency.example goes
	router  *mailbridge.Router
	g       *mailbridge.Gateway
	addr    string               // the gateway's SMTP address
	inbox   *matrixtest.Recorder // what the officer receives in room (newEncryptedScene: in every room)
}

// newScene sets the stage on a homeserver started with serverOpts and starts a gateway with
// opts (startGateway's defaults), its Client the bot and its Router the scene's.
func newScene(t *testing.T, opts mailbridge.Options, serverOpts ...matrixtest.Option) *scene {
	t.Helper()
	s := newStage(t, serverOpts...)
	s.start(t, opts, s.room, mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	return s
}

// newStage is newScene without its gateway, for a test that starts its own with other routes
// (start).
func newStage(t *testing.T, serverOpts ...matrixtest.Option) *scene {
	t.Helper()
	s := &scene{srv: matrixtest.NewServer(t, serverOpts...)}
	s.bot = s.srv.NewClient(t, "mailbot")
	s.officer = s.srv.NewClient(t, "officer")
	s.room = roomWith(t, s.bot, s.officer, false)
	return s
}

// newProxiedScene is newScene with the bot reaching the homeserver through a sendProxy, which
// the test uses to refuse or hold the bot's sends.
func newProxiedScene(t *testing.T, opts mailbridge.Options) (*scene, *sendProxy) {
	t.Helper()
	s, proxy := newProxiedStage(t)
	s.start(t, opts, s.room, mailbridge.Route{Address: "cases@agency.example", Room: string(s.room)})
	return s, proxy
}

// newProxiedStage is newProxiedScene without its gateway.
func newProxiedStage(t *testing.T) (*scene, *sendProxy) {
	t.Helper()
	s := &scene{srv: matrixtest.NewServer(t)}
	proxy := newSendProxy(t, s.srv.URL)
	s.bot = botVia(t, s.srv, proxy, "mailbot")
	s.officer = s.srv.NewClient(t, "officer")
	s.room = roomWith(t, s.bot, s.officer, false)
	return s, proxy
}

// newEncryptedScene is newScene with encrypted clients and a second, encrypted room, secure,
// for secure@agency.example. more returns further routes, which may name the scene's server
// and officer.
func newEncryptedScene(t *testing.T, opts mailbridge.Options, more func(s *scene) []mailbridge.Route) *scene {
	t.Helper()
	s := &scene{srv: matrixtest.NewServer(t)}
	s.bot = s.srv.NewClient(t, "mailbot", matrixtest.Encrypted())
	s.officer = s.srv.NewClient(t, "officer", matrixtest.Encrypted())
	s.room = roomWith(t, s.bot, s.officer, false)
	s.secure = roomWith(t, s.bot, s.officer, true)
	routes := []mailbridge.Route{
		{Address: "cases@agency.example", Room: string(s.room)},
		{Address: "secure@agency.example", Room: string(s.secure)},
	}
	if more != nil {
		routes = append(routes, more(s)...)
	}
	s.start(t, opts, "", routes...)
	return s
}

// start starts the scene's gateway with routes and its inbox, recording room ("" for every
// room).
func (s *scene) start(t *testing.T, opts mailbridge.Options, room id.RoomID, routes ...mailbridge.Route) {
	t.Helper()
	router, err := mailbridge.NewRouter(routes...)
	if err != nil {
		t.Fatal(err)
	}
	s.router = router
	opts.Client, opts.Router = s.bot, s.router
	s.g, s.addr = startGateway(t, opts)
	s.inbox = matrixtest.NewRecorder(t, s.officer, room)
}

// send sends one mail to cases@agency.example on a new connection, failing the test unless
// the gateway answers 250.
func (s *scene) send(t *testing.T, from, raw string) {
	t.Helper()
	if err := send(dial(t, s.addr), from, []string{"cases@agency.example"}, raw); err != nil {
		t.Fatal(err)
	}
}
