package product

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// MaxPageSize is the largest mapping page the platform serves (and its
// default).
const MaxPageSize = 5000

// findBatch bounds the keys sent in one /find call. The platform documents
// no limit; this keeps a request body small and is merged transparently.
const findBatch = 1000

type mappingPage struct {
	Items map[string]json.RawMessage `json:"items"`
	Meta  struct {
		HasNext    bool   `json:"hasNext"`
		LastEntity string `json:"lastEntity"`
	} `json:"meta"`
}

// cloudID reads a mapping value; the platform documents strings, but a
// numeric ID is kept as its JSON text rather than failing the page.
func cloudID(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

// Mappings iterates over every server-to-cloud mapping of a namespace (e.g.
// "identity:user", "jira:issue") for a transfer, fetching pages of pageSize
// (0 or more than MaxPageSize means MaxPageSize) lazily: a loop that breaks
// early fetches no further pages. Within a page, mappings come in server ID
// order. An error is yielded once, as the last element.
func (c *AMP) Mappings(ctx context.Context, clientKey, transferID, namespace string, pageSize int) iter.Seq2[Mapping, error] {
	return mappings(ctx, c.p.Do, clientKey, transferID, namespace, pageSize, MaxPageSize,
		ampBase+"/mapping/"+url.PathEscape(transferID)+"/page", RouteMappingPage, transferErr)
}

// doFunc is Client.Do, or a platform's wrapper of it.
type doFunc func(ctx context.Context, key string, req Request, out any) error

// mappings is the paging loop of the mapping API, shared by the Connect and
// Forge clients, whose page path, route, largest page and transfer error
// wrapping differ.
func mappings(ctx context.Context, do doFunc, clientKey, transferID, namespace string, pageSize, maxPage int,
	path, route string, wrap func(op, transferID string, err error) error) iter.Seq2[Mapping, error] {
	return func(yield func(Mapping, error) bool) {
		if err := requireArg("transferId", transferID); err != nil {
			yield(Mapping{}, err)
			return
		}
		if err := requireArg("namespace", namespace); err != nil {
			yield(Mapping{}, err)
			return
		}
		if pageSize <= 0 || pageSize > maxPage {
			pageSize = maxPage
		}
		last := ""
		for {
			q := url.Values{"namespace": {namespace}, "pageSize": {strconv.Itoa(pageSize)}}
			if last != "" {
				q.Set("lastEntity", last)
			}
			var page mappingPage
			req := Request{Path: path, Query: q, Route: route}
			if err := do(ctx, clientKey, req, &page); err != nil {
				yield(Mapping{}, wrap("mappings "+namespace, transferID, err))
				return
			}
			for _, k := range slices.Sorted(maps.Keys(page.Items)) {
				if !yield(Mapping{ServerID: k, CloudID: cloudID(page.Items[k])}, nil) {
					return
				}
			}
			if !page.Meta.HasNext {
				return
			}
			if page.Meta.LastEntity == "" || page.Meta.LastEntity == last {
				yield(Mapping{}, fmt.Errorf("mappings %s of transfer %s: hasNext without a new lastEntity (%q)", namespace, transferID, page.Meta.LastEntity))
				return
			}
			last = page.Meta.LastEntity
		}
	}
}

// FindMappings looks up the cloud IDs of specific server keys. Keys the
// platform does not know are absent from the result.
func (c *AMP) FindMappings(ctx context.Context, clientKey, transferID, namespace string, keys []string) (map[string]string, error) {
	return findMappings(ctx, c.p.Do, clientKey, transferID, namespace, keys,
		ampBase+"/mapping/"+url.PathEscape(transferID)+"/find", RouteMappingFind, transferErr)
}

// findMappings is FindMappings of either platform (see mappings).
func findMappings(ctx context.Context, do doFunc, clientKey, transferID, namespace string, keys []string,
	path, route string, wrap func(op, transferID string, err error) error) (map[string]string, error) {
	if err := requireArg("transferId", transferID); err != nil {
		return nil, err
	}
	if err := requireArg("namespace", namespace); err != nil {
		return nil, err
	}
	found := make(map[string]string, len(keys))
	for batch := range slices.Chunk(keys, findBatch) {
		var out map[string]json.RawMessage
		req := Request{Method: http.MethodPost, Path: path, Query: url.Values{"namespace": {namespace}}, Body: batch, Route: route}
		if err := do(ctx, clientKey, req, &out); err != nil {
			return nil, wrap("find mappings "+namespace, transferID, err)
		}
		for k, v := range out {
			found[k] = cloudID(v)
		}
	}
	return found, nil
}
