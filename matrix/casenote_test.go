package matrix

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func overdue() CaseNotification {
	return CaseNotification{
		CaseID: "4711",
		Title:  "Permit application overdue",
		Fields: []Field{
			{Name: "Status", Value: "Awaiting decision"},
			{Name: "Handler", Value: "Anna Svensson"},
		},
		Link:     "https://cases.example.se/4711",
		Severity: SeverityCritical,
	}
}

func TestCaseNotificationMessage(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(n *CaseNotification)
		body      string
		formatted string
	}{
		{
			name: "critical with fields and link",
			edit: func(*CaseNotification) {},
			body: "[Critical] Case 4711: Permit application overdue\n" +
				"Status: Awaiting decision\n" +
				"Handler: Anna Svensson\n" +
				"https://cases.example.se/4711",
			formatted: "<p><strong>Critical:</strong> Case 4711: Permit application overdue</p>" +
				"<ul><li><strong>Status:</strong> Awaiting decision</li><li><strong>Handler:</strong> Anna Svensson</li></ul>" +
				`<p><a href="https://cases.example.se/4711">Open case 4711</a></p>`,
		},
		{
			name: "info has no severity prefix",
			edit: func(n *CaseNotification) { n.Severity = SeverityInfo; n.Fields = nil; n.Link = "" },
			body: "Case 4711: Permit application overdue",
			// Nothing in the HTML adds to the body, but the paragraph is kept.
			formatted: "<p>Case 4711: Permit application overdue</p>",
		},
		{
			name:      "warning without case ID",
			edit:      func(n *CaseNotification) { n.Severity = SeverityWarning; n.CaseID = ""; n.Fields = nil },
			body:      "[Warning] Permit application overdue\nhttps://cases.example.se/4711",
			formatted: `<p><strong>Warning:</strong> Permit application overdue</p><p><a href="https://cases.example.se/4711">Open case</a></p>`,
		},
		{
			name: "user strings are escaped and tidied",
			edit: func(n *CaseNotification) {
				n.Title = "<script>alert(1)</script>\n  & more"
				n.Fields = []Field{
					{Name: `<img src=x onerror="x">`, Value: "line 1\r\nline <2>"},
					{Name: "", Value: "note without a name"},
					{Name: " ", Value: " "},
				}
				n.Link = `https://cases.example.se/4711?a=1&b="x"`
			},
			body: "[Critical] Case 4711: <script>alert(1)</script> & more\n" +
				"<img src=x onerror=\"x\">: line 1\nline <2>\n" +
				"note without a name\n" +
				`https://cases.example.se/4711?a=1&b="x"`,
			formatted: "<p><strong>Critical:</strong> Case 4711: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</p>" +
				"<ul><li><strong>&lt;img src=x onerror=&#34;x&#34;&gt;:</strong> line 1<br>line &lt;2&gt;</li><li>note without a name</li></ul>" +
				`<p><a href="https://cases.example.se/4711?a=1&amp;b=&#34;x&#34;">Open case 4711</a></p>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := overdue()
			tt.edit(&n)
			m, err := n.Message()
			if err != nil {
				t.Fatalf("Message() error: %v", err)
			}
			c := m.Content.(*event.MessageEventContent)
			if c.MsgType != event.MsgNotice {
				t.Errorf("msgtype = %s, want m.notice", c.MsgType)
			}
			if c.Body != tt.body {
				t.Errorf("body =\n%s\nwant\n%s", c.Body, tt.body)
			}
			if c.FormattedBody != tt.formatted {
				t.Errorf("formatted_body =\n%s\nwant\n%s", c.FormattedBody, tt.formatted)
			}
			if c.FormattedBody != "" && c.Format != event.FormatHTML {
				t.Errorf("format = %q", c.Format)
			}
			assertSpecHTML(t, c.FormattedBody)
		})
	}
}

func TestCaseNotificationRefusesBadInput(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(n *CaseNotification)
		reason string
	}{
		{"no title", func(n *CaseNotification) { n.Title = " \n " }, "without title"},
		{"javascript link", func(n *CaseNotification) { n.Link = "javascript:alert(1)" }, `scheme "javascript"`},
		{"javascript link with spaces", func(n *CaseNotification) { n.Link = "  JavaScript:alert(1)" }, `scheme "javascript"`},
		{"data link", func(n *CaseNotification) { n.Link = "data:text/html,<script>alert(1)</script>" }, `scheme "data"`},
		{"relative link", func(n *CaseNotification) { n.Link = "/cases/4711" }, "scheme"},
		{"link without host", func(n *CaseNotification) { n.Link = "https:///4711" }, "no host"},
		{"unparseable link", func(n *CaseNotification) { n.Link = "https://exa mple.se/\x7f" }, "link"},
		{"unknown severity", func(n *CaseNotification) { n.Severity = 7 }, "Severity(7)"},
		{"invalid UTF-8", func(n *CaseNotification) { n.Fields[0].Value = "\xff" }, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := overdue()
			tt.edit(&n)
			_, err := n.Message()
			if !errors.Is(err, ErrInvalidContent) {
				t.Fatalf("Message() error = %v, want ErrInvalidContent", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Message() error = %q, want reason %q", err, tt.reason)
			}
		})
	}
}

func TestSeverityString(t *testing.T) {
	for s, want := range map[Severity]string{
		SeverityInfo:     "Info",
		SeverityWarning:  "Warning",
		SeverityCritical: "Critical",
		Severity(-1):     "Severity(-1)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Severity(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
