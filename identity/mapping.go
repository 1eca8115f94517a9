package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"unicode"

	"golang.org/x/text/unicode/norm"
	"maunium.net/go/mautrix/id"
)

// Errors of the claim mapping.
var (
	// ErrCollision: the localpart the claims map to belongs to another subject and the policy
	// is CollisionRefuse.
	ErrCollision = errors.New("identity: Matrix ID already belongs to another person")
	// ErrUnmappable: the template gave nothing usable as a localpart (no letter or digit
	// survived normalisation), or it failed on the claims.
	ErrUnmappable = errors.New("identity: claims give no usable Matrix ID")
)

// CollisionPolicy says what a Mapper does when a new subject maps to a localpart that another
// subject already holds.
type CollisionPolicy int

const (
	// CollisionRefuse refuses the sign-in with ErrCollision: an administrator decides.
	CollisionRefuse CollisionPolicy = iota
	// CollisionSuffix gives the newcomer the first free localpart of "name-2", "name-3", ...
	CollisionSuffix
)

// DefaultIDTemplate maps the preferred_username claim.
const DefaultIDTemplate = "{{.preferred_username}}"

// TchapIDTemplate maps the email address as Tchap does: jane.smith@example.se becomes
// jane.smith-example.se.
const TchapIDTemplate = "{{tchap .email}}"

// DefaultDisplayNameTemplate is the name claim.
const DefaultDisplayNameTemplate = "{{.name}}"

// maxUserIDLength is the spec's limit on a whole user ID, in bytes.
const maxUserIDLength = 255

// maxSuffix bounds CollisionSuffix: past it the mapping is refused.
const maxSuffix = 999

// Mapper turns the claims of a verified ID token into a Matrix user ID and a display name.
// The zero value of every field but Server is a working default. A Mapper is safe for
// concurrent use.
type Mapper struct {
	Server      string          // the homeserver's server name, the part after ":" (required)
	IDTemplate  string          // text/template over the claims; "" means DefaultIDTemplate
	DisplayName string          // text/template over the claims; "" means DefaultDisplayNameTemplate
	Collision   CollisionPolicy // what a second subject mapping to a held localpart gets
	// Accounts remembers which subject holds which localpart, so that the same person keeps
	// the same ID even when the claims change, and two people never share one. nil means an
	// in-memory table (MemoryAccounts), lost on restart; OpenAccounts keeps it in the shared
	// database, for restarts and for several instances.
	Accounts Accounts

	once      sync.Once
	initErr   error
	idTmpl    *template.Template
	nameTmpl  *template.Template
	defaultAc Accounts
}

// Accounts records which subject (issuer and sub) holds which localpart.
type Accounts interface {
	// Lookup returns the localpart subject holds, or "" when it holds none.
	Lookup(ctx context.Context, subject string) (string, error)
	// Claim gives localpart to subject unless another subject holds it (then false). Claiming
	// a localpart the subject already holds succeeds.
	Claim(ctx context.Context, localpart, subject string) (bool, error)
}

// Mapping is what a Mapper made of one set of claims.
type Mapping struct {
	UserID      id.UserID
	DisplayName string
}

func (m *Mapper) init() error {
	m.once.Do(func() {
		if m.Server == "" {
			m.initErr = errors.New("identity: Mapper.Server is required")
			return
		}
		idt, namet := m.IDTemplate, m.DisplayName
		if idt == "" {
			idt = DefaultIDTemplate
		}
		if namet == "" {
			namet = DefaultDisplayNameTemplate
		}
		funcs := template.FuncMap{"tchap": Tchap, "lower": strings.ToLower, "localpart": emailLocalpart}
		var err error
		if m.idTmpl, err = template.New("id").Funcs(funcs).Option("missingkey=zero").Parse(idt); err != nil {
			m.initErr = fmt.Errorf("identity: Mapper.IDTemplate: %w", err)
			return
		}
		if m.nameTmpl, err = template.New("name").Funcs(funcs).Option("missingkey=zero").Parse(namet); err != nil {
			m.initErr = fmt.Errorf("identity: Mapper.DisplayName: %w", err)
			return
		}
		if m.Accounts == nil {
			m.defaultAc = NewMemoryAccounts()
		} else {
			m.defaultAc = m.Accounts
		}
	})
	return m.initErr
}

// Map returns the Matrix ID and display name for the person subject (unique at the provider,
// such as issuer + " " + sub) with claims. The same subject always gets the same ID.
func (m *Mapper) Map(ctx context.Context, subject string, claims map[string]any) (Mapping, error) {
	if err := m.init(); err != nil {
		return Mapping{}, err
	}
	name := render(m.nameTmpl, claims)
	held, err := m.defaultAc.Lookup(ctx, subject)
	if err != nil {
		return Mapping{}, fmt.Errorf("identity: look up account: %w", err)
	}
	if held != "" {
		return Mapping{UserID: id.NewUserID(held, m.Server), DisplayName: name}, nil
	}
	raw := render(m.idTmpl, claims)
	// Room for "@", ":" and the server, and for a suffix the collision policy may add.
	base, err := Localpart(raw, maxUserIDLength-2-len(m.Server)-len("-"+strconv.Itoa(maxSuffix)))
	if err != nil {
		return Mapping{}, err
	}
	for n := 1; n <= maxSuffix; n++ {
		lp := base
		if n > 1 {
			lp = base + "-" + strconv.Itoa(n)
		}
		ok, err := m.defaultAc.Claim(ctx, lp, subject)
		if err != nil {
			return Mapping{}, fmt.Errorf("identity: claim account: %w", err)
		}
		if ok {
			return Mapping{UserID: id.NewUserID(lp, m.Server), DisplayName: name}, nil
		}
		// Another instance may have just mapped this same subject (with other claims).
		if held, err := m.defaultAc.Lookup(ctx, subject); err != nil {
			return Mapping{}, fmt.Errorf("identity: look up account: %w", err)
		} else if held != "" {
			return Mapping{UserID: id.NewUserID(held, m.Server), DisplayName: name}, nil
		}
		if m.Collision == CollisionRefuse {
			return Mapping{}, fmt.Errorf("%w: %s", ErrCollision, lp)
		}
	}
	return Mapping{}, fmt.Errorf("%w: %s and its %d suffixes", ErrCollision, base, maxSuffix)
}

func render(t *template.Template, claims map[string]any) string {
	var b bytes.Buffer
	if err := t.Execute(&b, claims); err != nil {
		return ""
	}
	s := b.String()
	if s == "<no value>" {
		return ""
	}
	return strings.TrimSpace(s)
}

// Tchap maps an email address to a localpart as Tchap does: the address's local part, "-",
// and its domain (jane.smith@example.se -> jane.smith-example.se). Anything that is not an
// address is returned as it is.
func Tchap(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return email
	}
	return email[:at] + "-" + email[at+1:]
}

func emailLocalpart(email string) string {
	if at := strings.LastIndexByte(email, '@'); at > 0 {
		return email[:at]
	}
	return email
}

// Localpart normalises s to the spec's user ID localpart grammar, using only the characters
// every homeserver accepts (a-z, 0-9, ".", "_", "=", "-"): letters lose their accents (å ->
// a, é -> e; æ, ø, ß and þ are spelled out), upper case becomes lower, apostrophes vanish,
// spaces and other characters become ".", and runs of separators shrink to one. A result
// longer than max bytes is cut and given a short hash of the whole, so that two long names
// stay apart. The result is stable: the same s always gives the same localpart.
func Localpart(s string, max int) (string, error) {
	if max < 16 {
		max = 16
	}
	var b strings.Builder
	var sep rune // the separator due before the next letter or digit
	letter := func(r rune) {
		if sep != 0 && b.Len() > 0 {
			b.WriteRune(sep)
		}
		sep = 0
		b.WriteRune(r)
	}
	for _, r := range norm.NFKD.String(s) {
		if unicode.Is(unicode.Mn, r) {
			continue // a combining accent: drop it, keep its letter
		}
		if sp, ok := spelled[r]; ok {
			for _, c := range sp {
				letter(c)
			}
			continue
		}
		r = unicode.ToLower(r)
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			letter(r)
		case r == '\'' || r == '\u2019' || r == '`' || r == '\u00b4':
			// apostrophes are part of a name (O'Brien), not a break in it
		case r == '_' || r == '-' || r == '=' || r == '.':
			if sep == 0 {
				sep = r // the first separator of a run is kept
			}
		default:
			if sep == 0 {
				sep = '.'
			}
		}
	}
	lp := strings.TrimRight(b.String(), "._=-")
	if lp == "" {
		return "", fmt.Errorf("%w: no letter or digit in %q", ErrUnmappable, truncate(s, 64))
	}
	if len(lp) > max {
		sum := sha256.Sum256([]byte(lp))
		lp = strings.TrimRight(lp[:max-9], "._=-") + "-" + hex.EncodeToString(sum[:4])
	}
	return lp, nil
}

// spelled are letters that NFKD does not split into a base letter and an accent.
var spelled = map[rune]string{
	'æ': "ae", 'Æ': "ae", 'ø': "o", 'Ø': "o", 'ß': "ss", 'þ': "th", 'Þ': "th", 'đ': "d", 'Đ': "d",
	'ł': "l", 'Ł': "l", 'œ': "oe", 'Œ': "oe", 'ð': "d", 'Ð': "d", 'ı': "i",
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// MemoryAccounts is an Accounts kept in memory, for tests and single-process tools.
type MemoryAccounts struct {
	mu        sync.Mutex
	bySubject map[string]string
	byLocal   map[string]string
}

// NewMemoryAccounts returns an empty MemoryAccounts.
func NewMemoryAccounts() *MemoryAccounts {
	return &MemoryAccounts{bySubject: map[string]string{}, byLocal: map[string]string{}}
}

// Lookup implements Accounts.
func (a *MemoryAccounts) Lookup(_ context.Context, subject string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bySubject[subject], nil
}

// Claim implements Accounts.
func (a *MemoryAccounts) Claim(_ context.Context, localpart, subject string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if owner, ok := a.byLocal[localpart]; ok {
		return owner == subject, nil
	}
	if _, ok := a.bySubject[subject]; ok {
		return false, nil // a subject holds one localpart
	}
	a.byLocal[localpart] = subject
	a.bySubject[subject] = localpart
	return true, nil
}
