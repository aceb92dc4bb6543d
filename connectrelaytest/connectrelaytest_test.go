package connectrelaytest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/connectrelaytest"
)

// issueImporter is a vendor's Importer: it decodes the uploaded JSON lines,
// maps each server issue ID to its cloud ID and reports what it imported back
// to the server-side app.
type issueImporter struct {
	imported map[string]string // cloud ID -> summary
}

func (i *issueImporter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	dec := json.NewDecoder(req.Data)
	var ids []string
	summaries := map[string]string{}
	for {
		var issue struct{ ID, Summary string }
		if err := dec.Decode(&issue); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		ids = append(ids, issue.ID)
		summaries[issue.ID] = issue.Summary
	}
	cloud, err := req.AMP.FindMappings(ctx, req.Transfer.ClientKey, req.Transfer.TransferID, "jira:issue", ids)
	if err != nil {
		return err
	}
	for server, id := range cloud {
		i.imported[id] = summaries[server]
	}
	return req.AMP.Feedback(ctx, req.Transfer.ClientKey, req.Transfer.TransferID, map[string]int{"imported": len(cloud)})
}

func TestProduct_ImportRequestStreamsTheUploadAndReachesTheMigrationAPI(t *testing.T) {
	p := connectrelaytest.New(t, connectrelaytest.Options{})
	p.SetData("uploads/issues-1", []byte(`{"ID":"10000","Summary":"first"}`+"\n"+`{"ID":"10001","Summary":"second"}`))
	p.SetMappings("jira:issue", map[string]string{"10000": "20000", "10001": "20001"})
	imp := &issueImporter{imported: map[string]string{}}
	if err := imp.Import(t.Context(), p.ImportRequest(t, "transfer-1", "uploads/issues-1", "final")); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"20000": "first", "20001": "second"}, imp.imported); diff != "" {
		t.Errorf("imported (-want +got):\n%s", diff)
	}
	if fb := p.Feedback("transfer-1"); len(fb) != 1 || string(fb[0]) != `{"imported":2}` {
		t.Errorf("feedback = %s, want one {\"imported\":2}", fb)
	}
	for _, r := range p.Requests() {
		if r.Claims.Issuer != "com.example.app" {
			t.Errorf("%s %s signed by %q, want the app key", r.Method, r.Path, r.Claims.Issuer)
		}
	}
}

func TestProduct_MappingsArePagedInServerIDOrder(t *testing.T) {
	p := connectrelaytest.New(t, connectrelaytest.Options{BasePath: "/wiki"})
	p.SetMappings("identity:user", map[string]string{"email/c@x": "3", "email/a@x": "1", "email/b@x": "2"})
	var got []string
	for m, err := range p.AMP().Mappings(t.Context(), p.Tenant().ClientKey, "transfer-1", "identity:user", 2) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.ServerID+"="+m.CloudID)
	}
	if diff := cmp.Diff([]string{"email/a@x=1", "email/b@x=2", "email/c@x=3"}, got); diff != "" {
		t.Errorf("mappings (-want +got):\n%s", diff)
	}
	if n := len(p.Requests()); n != 2 {
		t.Errorf("mapping pages fetched = %d, want 2 (page size 2 over 3 mappings)", n)
	}
}

type onboarding struct{ accountID string }

func (o *onboarding) InitializeTenant(ctx context.Context, req *connectrelay.InitRequest) error {
	var me struct {
		AccountID string `json:"accountId"`
	}
	if err := req.Product.Get(ctx, req.Tenant.ID(), "/rest/api/3/myself", &me); err != nil {
		return err
	}
	o.accountID = me.AccountID
	return nil
}

func TestProduct_InitRequestCallsTheProductAsTheApp(t *testing.T) {
	p := connectrelaytest.New(t, connectrelaytest.Options{})
	p.Handle("GET /rest/api/3/myself", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"accountId":"557058:app-user"}`)
	}))
	o := &onboarding{}
	if err := o.InitializeTenant(t.Context(), p.InitRequest()); err != nil {
		t.Fatalf("InitializeTenant: %v", err)
	}
	if o.accountID != "557058:app-user" {
		t.Errorf("accountId = %q", o.accountID)
	}
	reqs := p.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/rest/api/3/myself" || !strings.HasPrefix(reqs[0].Header.Get("Authorization"), "JWT ") {
		t.Errorf("requests = %+v, want one JWT-signed GET /rest/api/3/myself", reqs)
	}
}

func TestProduct_UnknownEndpointsAnswer404(t *testing.T) {
	p := connectrelaytest.New(t, connectrelaytest.Options{})
	err := p.Client().Get(t.Context(), p.Tenant().ID(), "/rest/api/3/nothing", nil)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get of an endpoint the test did not add = %v, want a 404", err)
	}
}
