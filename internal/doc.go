// Package internal holds code that samtal's packages share and its users must not import:
// storage (the one database), homeserver (running Dendrite for matrixtest and `samtal dev`).
package internal
