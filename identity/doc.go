// Package identity will connect an agency's identity provider to Matrix: OIDC sign-in, Matrix
// OAuth 2.0 login, directory lookup of colleagues by email address, and offboarding of people
// who left.
//
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
// policy and a display name template.
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
// request has a timeout.
//
// Not done here: the provider side (this package is a client of an OP), token storage in the
// browser (the application keeps Identity's tokens server side), and the refresh of the
// provider's own tokens for a web application's session.
package identity
