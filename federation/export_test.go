package federation

import (
	"crypto"

	"github.com/go-jose/go-jose/v4"
)

// SignPayloadForTest signs payload as it is, unchecked, as a publisher with a broken signer
// would: for fuzzing what Parse does with signed garbage.
func SignPayloadForTest(payload []byte, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmFor(key.Public())
	if err != nil {
		return nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType(mediaType))
	if err != nil {
		return nil, err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return nil, err
	}
	out, err := jws.CompactSerialize()
	return []byte(out), err
}
