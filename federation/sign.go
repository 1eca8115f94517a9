package federation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// mediaType is the JWS "typ" header of a federation list, so that no other document signed
// with the same key passes for one.
const mediaType = "samtal-federation+json"

// Sign checks doc and signs it with key (an ed25519.PrivateKey or a P-256 *ecdsa.PrivateKey),
// returning the JWS in compact serialization: what the coordinating body publishes.
func Sign(doc Document, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmFor(key.Public())
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("federation: encode list: %w", err)
	}
	if _, err := parseDocument(payload, len(doc.Members)); err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType(mediaType))
	if err != nil {
		return nil, fmt.Errorf("federation: signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("federation: sign list: %w", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("federation: sign list: %w", err)
	}
	return []byte(out), nil
}

// Parse verifies a signed list against key (an ed25519.PublicKey or a P-256
// *ecdsa.PublicKey) and checks it at time now: signature, structure, limits and validity
// period. It does not compare versions; Watcher does. maxMembers <= 0 means 1000.
func Parse(signed []byte, key crypto.PublicKey, now time.Time, maxMembers int) (*List, error) {
	l, err := verify(signed, key, maxMembers)
	if err != nil {
		return nil, err
	}
	if err := l.checkTime(now); err != nil {
		return nil, err
	}
	return l, nil
}

// verify checks the signature and the document, not the time.
func verify(signed []byte, key crypto.PublicKey, maxMembers int) (*List, error) {
	if maxMembers <= 0 {
		maxMembers = defaultMaxMembers
	}
	alg, err := algorithmFor(key)
	if err != nil {
		return nil, err
	}
	jws, err := jose.ParseSignedCompact(string(signed), []jose.SignatureAlgorithm{alg})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if len(jws.Signatures) != 1 || jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType] != mediaType {
		return nil, fmt.Errorf("%w: not a federation list (JWS typ must be %s)", ErrSignature, mediaType)
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	l, err := parseDocument(payload, maxMembers)
	if err != nil {
		return nil, err
	}
	l.raw = signed
	return l, nil
}

// clockSkew is how far in the future a list's issued_at may be.
const clockSkew = 5 * time.Minute

func (l *List) checkTime(now time.Time) error {
	if !now.Before(l.doc.ExpiresAt) {
		return fmt.Errorf("%w: version %d expired at %s", ErrExpired, l.doc.Version, l.doc.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if l.doc.IssuedAt.After(now.Add(clockSkew)) {
		return fmt.Errorf("%w: version %d is issued at %s", ErrNotYetValid, l.doc.Version, l.doc.IssuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func algorithmFor(key crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return jose.EdDSA, nil
		}
	case *ecdsa.PublicKey:
		if k != nil && k.Curve == elliptic.P256() {
			return jose.ES256, nil
		}
	}
	return "", fmt.Errorf("federation: the list key must be an Ed25519 or a P-256 (ES256) key, not %T", key)
}

// GenerateKey makes an Ed25519 key pair for signing lists, as PEM: the private key in PKCS #8
// (keep it with the coordinating body, owner-only) and the public key in PKIX (give it to
// every samtal of the federation).
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), nil
}

// ParsePublicKey reads the key that lists must be signed with from PEM ("PUBLIC KEY", PKIX):
// Ed25519 or P-256.
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("federation: the list key is not a PEM \"PUBLIC KEY\"")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("federation: the list key: %w", err)
	}
	if _, err := algorithmFor(key); err != nil {
		return nil, err
	}
	return key, nil
}

// ParsePrivateKey reads a signing key from PEM ("PRIVATE KEY", PKCS #8): Ed25519 or P-256.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("federation: the signing key is not a PEM \"PRIVATE KEY\"")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("federation: the signing key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("federation: the signing key is a %T", key)
	}
	if _, err := algorithmFor(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}
