package migration_test

import (
	"context"
	"errors"
	"testing"

	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/product"
)

// ackingAMP is a fake AMP that also acknowledges messages, recording them.
type ackingAMP struct {
	*fakeAMP
	acks []string
}

func (a *ackingAMP) AcknowledgeMessages(_ context.Context, clientKey, transferID, status string, ids []string) error {
	a.acks = append(a.acks, clientKey+" "+transferID+" "+status)
	return nil
}

func TestRouterSendsInstallationsToForge(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	connect, forge := newFakeAMP(), &ackingAMP{fakeAMP: newFakeAMP()}
	r := migration.Router{Connect: connect, Forge: forge}

	for _, key := range []string{tenant, installation} {
		if err := r.ReportProgress(ctx, key, "t-"+key, product.Progress{Status: product.StatusInProgress, Percent: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ListData(ctx, key, "t-"+key); err != nil {
			t.Fatal(err)
		}
		rc, err := r.OpenData(ctx, key, "k-"+key)
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Close()
	}
	if len(connect.calls("t-"+tenant)) != 1 || len(connect.calls("t-"+installation)) != 0 ||
		connect.listCount("t-"+tenant) != 1 || connect.openCount("k-"+tenant) != 1 || connect.openCount("k-"+installation) != 0 {
		t.Error("the Connect AMP got a Forge installation's call, or missed its tenant's")
	}
	if len(forge.calls("t-"+installation)) != 1 || len(forge.calls("t-"+tenant)) != 0 ||
		forge.listCount("t-"+installation) != 1 || forge.openCount("k-"+installation) != 1 {
		t.Error("the Forge AMP got a Connect tenant's call, or missed its installation's")
	}
	if err := r.AcknowledgeMessages(ctx, installation, "t", product.MessageSuccess, []string{"m"}); err != nil || len(forge.acks) != 1 {
		t.Errorf("Forge acknowledgement: %v, acks %v", err, forge.acks)
	}
	if err := r.AcknowledgeMessages(ctx, tenant, "t", product.MessageSuccess, []string{"m"}); !errors.Is(err, product.ErrNotSupported) {
		t.Errorf("Connect acknowledgement = %v, want ErrNotSupported", err)
	}

	// Without Forge, a Forge installation's calls fail clearly; Connect's work.
	noForge := migration.Router{Connect: connect}
	_, listErr := noForge.ListData(ctx, installation, "t")
	var mapErr error
	for _, err := range noForge.Mappings(ctx, installation, "t", "jira:issue", 0) {
		mapErr = err
	}
	for name, err := range map[string]error{
		"list":     listErr,
		"mappings": mapErr,
		"ack":      noForge.AcknowledgeMessages(ctx, installation, "t", product.MessageSuccess, []string{"m"}),
		"feedback": noForge.Feedback(ctx, installation, "t", map[string]string{}),
	} {
		if !errors.Is(err, migration.ErrForgeNotConfigured) {
			t.Errorf("%s without Forge = %v, want ErrForgeNotConfigured", name, err)
		}
	}
	if _, err := noForge.ListData(ctx, tenant, "t2"); err != nil {
		t.Errorf("Connect call without Forge: %v", err)
	}
}
