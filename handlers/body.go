package handlers

import (
	"errors"
	"io"
	"net/http"
)

var errTooLarge = errors.New("body too large")

// readLimited reads at most limit bytes of the body and reports errTooLarge when
// there is more: one byte past the limit is read to tell "exactly limit" from
// "more than limit".
func readLimited(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}
