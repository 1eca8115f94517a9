// Package e2ee will add end-to-end encryption to a matrix client: a persistent crypto store,
// cross-signing, recovery keys, key backup and verification, on mautrix's pure-Go Olm (build
// with -tags goolm).
//
// Nothing is implemented yet.
package e2ee
