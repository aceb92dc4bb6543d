package connectrelay_test

import (
	"bufio"
	"context"
	"fmt"
	"strings"

	"github.com/connectrelay/connectrelay"
)

// lineCounter is an Importer that counts the lines of each upload. A real one
// writes them to the vendor's store, idempotently per (transfer, s3Key).
type lineCounter struct {
	lines map[string]int
}

func (c *lineCounter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	sc := bufio.NewScanner(req.Data) // streamed: uploads can be gigabytes
	n := 0
	for sc.Scan() {
		n++
	}
	if err := sc.Err(); err != nil {
		return err // the upload is retried
	}
	c.lines[req.Transfer.TransferID+"/"+req.S3Key] = n // replaces, never adds: idempotent
	return nil
}

func ExampleImporter() {
	imp := &lineCounter{lines: map[string]int{}}
	req := &connectrelay.ImportRequest{
		Transfer: connectrelay.Transfer{TransferID: "transfer-1", ClientKey: "jira:tenant-1"},
		S3Key:    "uploads/issues", Label: "final", Attempt: 1,
		Data: strings.NewReader("{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"),
	}
	for range 2 { // a re-run after a crash changes nothing
		if err := imp.Import(context.Background(), req); err != nil {
			fmt.Println(err)
		}
		req.Data = strings.NewReader("{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n")
	}
	fmt.Println(imp.lines)
	// Output: map[transfer-1/uploads/issues:3]
}

// seats keeps which tenants currently have the app enabled.
type seats map[string]bool

func (s seats) TenantLifecycle(ctx context.Context, ev *connectrelay.LifecycleEvent) error {
	switch ev.Type {
	case connectrelay.EventEnabled:
		s[ev.Tenant.ID()] = true
	case connectrelay.EventDisabled, connectrelay.EventUninstalled:
		s[ev.Tenant.ID()] = false // never delete data on a lifecycle event
	default:
		// A type this version does not know: later versions deliver more.
	}
	return nil
}

func ExampleLifecycleListener() {
	s := seats{}
	tenant := connectrelay.Tenant{HostInfo: connectrelay.HostInfo{ClientKey: "jira:tenant-1"}}
	for _, typ := range []connectrelay.EventType{connectrelay.EventEnabled, "a-future-event", connectrelay.EventDisabled} {
		_ = s.TenantLifecycle(context.Background(), &connectrelay.LifecycleEvent{Type: typ, Tenant: tenant})
		fmt.Println(typ, s["jira:tenant-1"])
	}
	// Output:
	// tenant.enabled true
	// a-future-event true
	// tenant.disabled false
}

func ExampleTenant_ID() {
	connect := connectrelay.Tenant{HostInfo: connectrelay.HostInfo{ClientKey: "jira:tenant-1",
		InstallationID: "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5"}}
	forgeOnly := connectrelay.Tenant{HostInfo: connectrelay.HostInfo{
		InstallationID: "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5"}}
	fmt.Println(connect.ID())
	fmt.Println(forgeOnly.ID())
	// Output:
	// jira:tenant-1
	// ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5
}
