package main

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// gateway.yaml's values are checked against the type each is decoded into before it is
// decoded, so that an error names the key an admin wrote, with the line of the file:
//
//	imap[0].poll_interval: "5x" is not a duration such as 30s or 5m (line 12)
//
// rather than the YAML decoder's "line 12: cannot unmarshal", which names no key and counts
// lines of the file as it is after ${NAME} expansion. The decoder runs after it as before; the
// check uses the decoder itself for each value (yaml.Node.Decode), so what it accepts is what
// the decoder accepts.

// checkConfigValues returns the first value under n that cannot be decoded into t, or that
// checkValue refuses, named by its key; key is n's own ("" for the document).
func checkConfigValues(n *yaml.Node, t reflect.Type, key string) error {
	switch {
	case n == nil, n.Kind == 0: // an empty file: loadGatewayConfig says what is missing
		return nil
	case n.Kind == yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return checkConfigValues(n.Content[0], t, key)
	case n.Kind == yaml.AliasNode:
		return checkConfigValues(n.Alias, t, key)
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil // the zero value: a key written with nothing after it
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return checkLeaf(n, t, key)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return shapeError(key, n, "a mapping of keys")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			sub := joinKey(key, name)
			f, ok := yamlField(t, name)
			if !ok {
				return fmt.Errorf("%s: unknown key (line %d); see docs/gateway.example.yaml", sub, n.Content[i].Line)
			}
			if err := checkConfigValues(n.Content[i+1], f.Type, sub); err != nil {
				return err
			}
			if err := checkNotNegative(n.Content[i+1], f.Type, sub); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return shapeError(key, n, "a list")
		}
		for i, c := range n.Content {
			if err := checkConfigValues(c, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return shapeError(key, n, "a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkConfigValues(n.Content[i+1], t.Elem(), joinKey(key, n.Content[i].Value)); err != nil {
				return err
			}
		}
		return nil
	}
	return checkLeaf(n, t, key)
}

// checkLeaf decodes a single value as the decoder will, and checks what checkValue says
// about its key.
func checkLeaf(n *yaml.Node, t reflect.Type, key string) error {
	v := reflect.New(t)
	if err := n.Decode(v.Interface()); err != nil {
		return valueError(key, n, t)
	}
	if s, ok := v.Elem().Interface().(string); ok && s != "" {
		if check := valueChecks[indexless.ReplaceAllString(key, "[]")]; check != nil {
			if want := check(s); want != "" {
				return fmt.Errorf("%s: %q is not %s (line %d)", key, s, want, n.Line)
			}
		}
	}
	return nil
}

// checkNotNegative refuses a negative number for a key of a section (every count and size of
// gateway.yaml is one; 0 means the default). Numbers in a mapping, such as power levels, may be
// negative.
func checkNotNegative(n *yaml.Node, t reflect.Type, key string) error {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return nil
	}
	if i, err := strconv.ParseInt(n.Value, 0, 64); err == nil && i < 0 && n.Kind == yaml.ScalarNode {
		return fmt.Errorf("%s: %d is negative (line %d); 0 means the default", key, i, n.Line)
	}
	return nil
}

// valueError says what kind of value key wants.
func valueError(key string, n *yaml.Node, t reflect.Type) error {
	want := "a single value"
	switch {
	case t == reflect.TypeFor[duration]():
		want = "a duration such as 30s or 5m"
	case isInteger(t) && strings.HasSuffix(key, "_bytes"):
		want = "a number of bytes such as 26214400 (25 MiB)"
	case isInteger(t):
		want = "a whole number"
	case t.Kind() == reflect.Bool:
		want = "true or false"
	}
	return shapeError(key, n, want)
}

// shapeError: the value of key (shown when it is a single value) is not what it should be.
func shapeError(key string, n *yaml.Node, want string) error {
	got := fmt.Sprintf("%q", n.Value)
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	}
	if key == "" {
		key = "the file"
	}
	return fmt.Errorf("%s: %s is not %s (line %d)", key, got, want, n.Line)
}

func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// yamlField finds the field of struct t that the key name decodes into, as the YAML decoder
// does: by its yaml tag, else its lower-cased name, looking into inline structs.
func yamlField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue // unexported: not decoded
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if sf, ok := yamlField(ft, name); ok {
					return sf, true
				}
			}
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func joinKey(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// indexless matches the list indexes of a key, for valueChecks.
var indexless = regexp.MustCompile(`\[[0-9]+\]`)

// valueChecks are what the string values of some keys (list indexes written []) must be; each
// returns what the value should be, or "" when it is good. Checked before anything is opened,
// so that a typo stops `samtal gateway` before it logs in.
var valueChecks = map[string]func(string) string{
	"smtp.listen":                hostPort("127.0.0.1:2525"),
	"smtp.tls.listen":            hostPort("0.0.0.0:465"),
	"http.listen":                hostPort("127.0.0.1:9125"),
	"dns.server":                 hostPort("192.0.2.53:53"),
	"imap[].addr":                hostPort("imap.agency.example:993"),
	"routes[].address":           mailAddress,
	"imap[].mailboxes[].address": mailAddress,
	"routes[].allow_senders[]":   allowedSender,
}

// hostPort wants host:port, such as example.
func hostPort(example string) func(string) string {
	return func(s string) string {
		host, port, err := net.SplitHostPort(s)
		if err != nil || port == "" || strings.ContainsAny(host, " /") {
			return "host:port such as " + example
		}
		return ""
	}
}

// mailAddress wants local@domain (a route's may hold a capture, "case-{id}@...").
func mailAddress(s string) string {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 || strings.ContainsAny(s, " \t<>,;") {
		return "a mail address such as cases@agency.example"
	}
	return ""
}

// allowedSender wants an address or @domain.
func allowedSender(s string) string {
	if d, ok := strings.CutPrefix(s, "@"); ok && d != "" && !strings.ContainsAny(d, "@ \t<>,;") {
		return ""
	}
	if mailAddress(s) == "" {
		return ""
	}
	return "an address such as system@agency.example or a domain such as @agency.example"
}
