package tenant

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPositional_RewritesAsPgxDoes(t *testing.T) {
	t.Parallel()
	named := installArgs(&InstallPayload{}, Sealed{KeyID: "k", Nonce: []byte{1}, Ciphertext: []byte{2}}, time.Unix(1, 0), time.Unix(2, 0))
	named["installed"], named["installed_iat"] = true, time.Unix(3, 0)
	for _, sql := range []string{insertTenantSQL, updateInstallSQL} {
		wantSQL, wantArgs, err := named.RewriteQuery(context.Background(), nil, sql, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := positional(sql)
		if diff := cmp.Diff(wantSQL, p.sql); diff != "" {
			t.Errorf("SQL (-pgx +positional):\n%s", diff)
		}
		if diff := cmp.Diff(wantArgs, p.args(named)); diff != "" {
			t.Errorf("arguments (-pgx +positional):\n%s", diff)
		}
	}
}
