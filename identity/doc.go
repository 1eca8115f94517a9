// Package identity will connect an agency's identity provider to Matrix: OIDC sign-in, Matrix
// OAuth 2.0 login, directory lookup of colleagues by email address, and offboarding of people
// who left.
//
// Nothing is implemented yet.
package identity
