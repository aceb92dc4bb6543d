package migration_test

import (
	"errors"
	"fmt"

	"github.com/connectrelay/connectrelay/internal/migration"
)

func ExampleParseEvent() {
	body := []byte(`{"eventType":"app-data-uploaded","transferId":"2e170ff3","s3Key":"a1/b2","label":"final",
		"migrationDetails":{"migrationId":"fd2b0ea1","jiraClientKey":"jira-1","confluenceClientKey":"unknown"}}`)
	ev, err := migration.ParseEvent(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Type, ev.TransferID, ev.S3Key, ev.Label, ev.Known())
	fmt.Println(ev.ClientKeys())
	fmt.Println(ev.DedupeKey()[:len("content:")])

	_, err = migration.ParseEvent([]byte(`{"eventType":"listener-triggered"}`))
	fmt.Println(errors.Is(err, migration.ErrInvalidEvent))
	// Output:
	// app-data-uploaded 2e170ff3 a1/b2 final true
	// [jira-1]
	// content:
	// true
}
