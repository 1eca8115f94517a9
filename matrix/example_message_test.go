package matrix_test

import (
	"fmt"
	"strings"

	"maunium.net/go/mautrix/event"

	"github.com/samtalhq/samtal/matrix"
)

func ExampleMarkdown() {
	m := matrix.Markdown("**Case 4711** needs a decision from @anna:example.se")

	c := m.Content.(*event.MessageEventContent)
	fmt.Println(c.Body)
	fmt.Println(c.FormattedBody)
	fmt.Println(c.Mentions.UserIDs)
	// Output:
	// **Case 4711** needs a decision from @anna:example.se
	// <strong>Case 4711</strong> needs a decision from <a href="https://matrix.to/#/@anna:example.se">@anna:example.se</a>
	// [@anna:example.se]
}

func ExampleCaseNotification_Message() {
	n := matrix.CaseNotification{
		CaseID: "4711",
		Title:  "Permit application overdue",
		Fields: []matrix.Field{
			{Name: "Status", Value: "Awaiting decision"},
			{Name: "Handler", Value: "Anna Svensson"},
		},
		Link:     "https://cases.example.se/4711",
		Severity: matrix.SeverityCritical,
	}
	m, err := n.Message()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Content.(*event.MessageEventContent).Body)
	// Output:
	// [Critical] Case 4711: Permit application overdue
	// Status: Awaiting decision
	// Handler: Anna Svensson
	// https://cases.example.se/4711
}

func ExampleFit() {
	minutes := strings.Repeat("Protokoll från sammanträdet. ", 5000)

	fitted, overflow, mimeType, fits := matrix.Fit(matrix.Notice(minutes))
	if !fits {
		// Send fitted, then upload overflow and send it as a file, for
		// example in a thread under fitted:
		//   uri := upload(overflow, mimeType)
		//   matrix.File(matrix.FileKind, uri, "minutes.txt", mimeType, int64(len(overflow)))
		size, _ := matrix.ContentSize(fitted)
		fmt.Println("fits:", size <= matrix.MaxContentSize)
		fmt.Println("attach:", len(overflow), "bytes of", mimeType)
		body := fitted.Content.(*event.MessageEventContent).Body
		fmt.Println("ends:", body[strings.LastIndex(body, "…"):])
	}
	// Output:
	// fits: true
	// attach: 155000 bytes of text/plain; charset=utf-8
	// ends: … (message shortened; the full text is attached)
}

func ExampleSanitizeHTML() {
	mail := `<p onclick="steal()">Hej!<script>alert(1)</script></p>` +
		`<img src="https://tracker.example/pixel.gif" alt="[logo]"><b>Beslut`
	fmt.Println(matrix.SanitizeHTML(mail))
	// Output:
	// <p>Hej!</p>[logo]<b>Beslut</b>
}
