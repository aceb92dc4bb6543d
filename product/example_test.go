package product_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/connectrelay/connectrelay/product"
)

// A vendor's TenantInitializer receives the *product.Client and calls the
// tenant's REST API as the app. Identifiers in the path are escaped by the
// caller, and Route keeps metrics low-cardinality.
func ExampleClient_Do() {
	initialize := func(ctx context.Context, api *product.Client, clientKey, projectKey string) error {
		var project struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		err := api.Do(ctx, clientKey, product.Request{
			Path:  "/rest/api/3/project/" + url.PathEscape(projectKey),
			Query: url.Values{"expand": {"description"}},
			Route: "/rest/api/3/project/{projectKey}",
		}, &project)
		switch {
		case errors.Is(err, product.ErrNotFound):
			return nil // nothing to initialise on this site
		case err != nil:
			return fmt.Errorf("read project %s: %w", projectKey, err)
		}
		return api.Do(ctx, clientKey, product.Request{
			Method: "PUT",
			Path:   "/rest/api/3/project/" + url.PathEscape(project.ID) + "/properties/my-app-config",
			Body:   map[string]any{"initialised": true},
			Route:  "/rest/api/3/project/{id}/properties/{key}",
		}, nil)
	}
	_ = initialize
}
