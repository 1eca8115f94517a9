package homeserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// File names inside a homeserver's data directory.
const (
	configFile     = "dendrite.yaml"
	signingKeyFile = "matrix_key.pem"
	tlsCertFile    = "tls.crt"
	tlsKeyFile     = "tls.key"
	logFile        = "dendrite.log"
)

// writeSigningKey writes a fresh ed25519 server signing key in the PEM form Dendrite reads
// (the 32-byte seed, with a Key-ID header), unless one exists: a restarted server keeps its key.
func writeSigningKey(dir string) error {
	path := filepath.Join(dir, signingKeyFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	keyID := strings.NewReplacer("-", "", "_", "").Replace(base64.RawURLEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
	block := &pem.Block{
		Type:    "MATRIX PRIVATE KEY",
		Headers: map[string]string{"Key-ID": "ed25519:" + keyID[:6]},
		Bytes:   priv.Seed(),
	}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

// writeTLS writes a self-signed certificate for localhost, 127.0.0.1 and host (if not ""),
// for the federation listener. Servers in a test federation skip TLS validation, so trust
// does not matter to them; a checker can trust the certificate file.
func writeTLS(dir, host string) error {
	if _, err := os.Stat(filepath.Join(dir, tlsCertFile)); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     dnsNames(host),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, tlsKeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, tlsCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func dnsNames(host string) []string {
	if host == "" || host == "localhost" {
		return []string{"localhost"}
	}
	return []string{"localhost", host}
}

// configData is what the Dendrite configuration template is filled with.
type configData struct {
	Dir            string
	ServerName     string
	SharedSecret   string
	Federation     bool
	RateLimit      bool
	RateThreshold  int
	RateCooloffMS  int
	AppServices    []string
	MaxUploadBytes int64
}

// quote renders a string as a double-quoted YAML scalar (a JSON string is one).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var configTemplate = template.Must(template.New("dendrite").Funcs(template.FuncMap{
	"q":    quote,
	"path": func(dir, name string) string { return quote(filepath.Join(dir, name)) },
	"db":   func(dir, name string) string { return quote("file:" + filepath.Join(dir, name+".db")) },
}).Parse(`# Written by samtal; rewritten on every start.
version: 2
global:
  server_name: {{q .ServerName}}
  private_key: {{path .Dir "matrix_key.pem"}}
  key_validity_period: 168h0m0s
  cache:
    max_size_estimated: 64mb
    max_age: 1h
  trusted_third_party_id_servers: []
  disable_federation: {{not .Federation}}
  presence:
    enable_inbound: false
    enable_outbound: false
  report_stats:
    enabled: false
  jetstream:
    storage_path: {{q .Dir}}
    topic_prefix: Dendrite
  metrics:
    enabled: false
  dns_cache:
    enabled: false
app_service_api:
  database:
    connection_string: {{db .Dir "appservice"}}
  disable_tls_validation: true
  config_files:{{if not .AppServices}} []{{end}}
{{- range .AppServices}}
    - {{q .}}
{{- end}}
client_api:
  registration_disabled: true
  guests_disabled: true
  registration_shared_secret: {{q .SharedSecret}}
  rate_limiting:
    enabled: {{.RateLimit}}
    threshold: {{.RateThreshold}}
    cooloff_ms: {{.RateCooloffMS}}
federation_api:
  database:
    connection_string: {{db .Dir "federationapi"}}
  send_max_retries: 16
  disable_tls_validation: true
  disable_http_keepalives: false
  key_perspectives: []
  prefer_direct_fetch: true
key_server:
  database:
    connection_string: {{db .Dir "keyserver"}}
media_api:
  database:
    connection_string: {{db .Dir "mediaapi"}}
  base_path: {{path .Dir "media"}}
  max_file_size_bytes: {{.MaxUploadBytes}}
  dynamic_thumbnails: false
mscs:
  database:
    connection_string: {{db .Dir "mscs"}}
  mscs: []
relay_api:
  database:
    connection_string: {{db .Dir "relayapi"}}
room_server:
  database:
    connection_string: {{db .Dir "roomserver"}}
sync_api:
  database:
    connection_string: {{db .Dir "syncapi"}}
  search:
    enabled: false
user_api:
  account_database:
    connection_string: {{db .Dir "userapi"}}
  bcrypt_cost: 4
tracing:
  enabled: false
logging:
  - type: std
    level: info
`))

func writeConfig(d configData) error {
	var buf bytes.Buffer
	if err := configTemplate.Execute(&buf, d); err != nil {
		return fmt.Errorf("render dendrite config: %w", err)
	}
	return os.WriteFile(filepath.Join(d.Dir, configFile), buf.Bytes(), 0o600)
}
