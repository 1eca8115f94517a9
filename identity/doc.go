// Package identity connects an agency's identity provider to Matrix: OIDC sign-in, Matrix
// OAuth 2.0 login, directory lookup of colleagues by email address, and offboarding of people
// who left.
//
// # Directory and direct chats
//
// A Directory maps an email address to a Matrix ID through a chain of resolvers, tried in
// order; each answer (a Match) names the resolver and how it knows. A not-found is a
// *NotFoundError (errors.Is ErrNotFound), an outage ErrUnavailable: never a guess.
//
//	dir := identity.NewDirectory(identity.DirectoryOptions{},
//		identity.NewDomainResolver(c, identity.StaticDomains{"agency-b.se": {ServerName: "matrix.agency-b.se"}}, identity.DomainOptions{}),
//		identity.NewUserDirectory(c))
//	chat, err := identity.NewChats(c, dir, identity.ChatOptions{}).StartChat(ctx, "karin.lund@agency-b.se")
//
// The resolvers: IdentityServer (the identity service API v2 hashed lookup, with terms,
// pepper rotation and batches), DomainResolver (the email domain names the agency's server
// and localpart rule through a DomainTable, such as the federation list; the server's
// .well-known/matrix/server and /client are checked (ClientAPI: the published client API base
// URL) and the guess confirmed by a profile lookup over federation), UserDirectory (the own server's user directory, by display name),
// StaticDirectory (CSV or YAML), LDAPDirectory (the agency's Active Directory: mail ->
// account). Answers are cached for DirectoryOptions.TTL. StartChat
// reuses the direct chat in m.direct or creates an encrypted one, and can send an email
// invitation through an SMTP relay when nobody is found.
//
// # Offboarding
//
// A Reconciler compares who a Source (LDAPSource, StaticSource, SCIM) says is active with the
// members of the rooms an agency manages (a Scope) and plans who must go; Apply lowers their
// power levels, kicks them from every managed room on any server, and, with an Admin adapter
// for the agency's own server (Dendrite, Synapse, MAS for servers that delegate their accounts
// to matrix-authentication-service, AccountModeration for the spec's v1.18 lock and suspend),
// ends their sessions and, as ReconcileOptions ask, locks, suspends or deactivates them. What
// the own server does not offer is a *CapabilityError (ErrAdminUnsupported), and the plan
// names it in Plan.Missing instead of trying. Every action is appended to the
// AuditLog in the shared database; a plan that would remove more than
// ReconcileOptions.MaxRemovePercent of the scope is refused; a Source that cannot answer stops
// the run (ErrSourceUnavailable) rather than reading as "everyone left"; a second run does
// nothing.
//
//	rec := identity.NewReconciler(svc, &identity.LDAPSource{...}, identity.Scope{Spaces: []id.RoomID{space}}, audit, identity.ReconcileOptions{Admin: identity.NewDendrite(svc)})
//	plan, err := rec.Plan(ctx) // print it: plan.WriteTable(os.Stdout)
//	err = rec.Apply(ctx, plan)
//
// SCIM is an http.Handler for an IdP's SCIM 2.0 pushes (PATCH active=false, DELETE) and
// BackChannelLogout one for OIDC back-channel logout tokens; both offboard at once through
// Reconciler.Offboard. Given the shared database (SCIMOptions.DB, BackChannelOptions.DB), the
// SCIM users and the IDs of accepted logout tokens survive a restart and are shared by
// instances on one PostgreSQL database: a replayed token is refused by all of them.
//
// Not done here: SCIM Groups, filters and bulk operations (only /Users is served).
// # Sign-in and Matrix login
//
// A web application signs its users in with the agency's OpenID provider:
//
//	p, _ := identity.Connect(ctx, identity.ProviderOptions{Issuer: issuer, ClientID: id, ClientSecret: secret})
//	si, _ := identity.NewSignIn(p, identity.SignInOptions{RedirectURL: base + "/callback", CookieKey: key,
//		Mapper: &identity.Mapper{Server: "agency.se", IDTemplate: identity.TchapIDTemplate}, OnSignIn: startSession})
//	mux.Handle("/login", si.Login()); mux.Handle("/callback", si.Callback())
//
// Login keeps state, nonce and the PKCE verifier (S256) in a short-lived, sealed, HttpOnly
// cookie; Callback checks them, exchanges the code and verifies the ID token with
// Provider.Verify (signature by a key of the provider's JWKS, fetched again on rotation, with
// an algorithm it offers and never "none"; issuer, audience, azp, expiry within a clock skew,
// nonce used once). Each refusal is a sentinel (ErrState, ErrNoCookie, ErrIssuer, ErrAudience,
// ErrExpired, ErrNonce, ErrReplayed, ErrAlgorithm, ErrSignature, ErrCodeExchange, ...).
// SignIn.LogoutURL is RP-initiated logout. A Mapper turns the claims into a Matrix ID from a
// template ({{.preferred_username}}, or {{tchap .email}}: jane.smith@example.se becomes
// jane.smith-example.se), normalised to the localpart grammar (Localpart), with a collision
// policy and a display name template. Mapper.Accounts remembers who holds which localpart:
// OpenAccounts keeps it in the shared database, the same after a restart, with the collision
// policy enforced by the database for several instances at once (nil keeps it in memory).
//
// A Matrix client logs in through the homeserver's OAuth 2.0 API (spec v1.15) with OAuth
// (authorization code with PKCE and a loopback redirect on 127.0.0.1, for CLIs and desktops)
// or OAuthDevice (device authorization grant, for headless tools), both a matrix.Login. A
// Transport, given as matrix.Options.HTTPClient, keeps the rotating tokens fresh so that Send
// and the Syncer never see a refresh; the tokens live in the shared database, and processes
// sharing it refresh one at a time:
//
//	tr, _ := identity.NewTransport(ctx, db, "", identity.TransportOptions{})
//	c, _ := matrix.New(ctx, matrix.Options{HomeserverURL: hs, DB: db, HTTPClient: tr.Client(),
//		Login: identity.OAuth(identity.OAuthOptions{DB: db, Open: printAndOpen})})
//
// A homeserver without the OAuth API (ErrNoOAuth) takes LegacySSO (m.login.sso, then
// m.login.token, with the same loopback helper), matrix.JWT or matrix.Password.
//
// Tokens are never logged nor put in an error's text; Identity logs without them. Every
// request has a timeout (ProviderOptions.Timeout, OAuthOptions.HTTPTimeout,
// TransportOptions.Timeout, SSOOptions.HTTPTimeout; DefaultHTTPTimeout by default), also
// through an http.Client without one: a server that takes a request and does not answer gives
// ErrTimeout, naming the step.
//
// Not done here: the provider side (this package is a client of an OP), token storage in the
// browser (the application keeps Identity's tokens server side), and the refresh of the
// provider's own tokens for a web application's session.
package identity
