package migration

import (
	"encoding/json"

	"github.com/connectrelay/connectrelay/internal/jsonobj"
)

// objectMembers decodes a JSON object into its members, with the result of
// json.Unmarshal into a map[string]json.RawMessage: the same error for a body
// that is not JSON or not an object, a nil map and no error for null, the last
// value of a name given twice. It validates once and then walks the object
// (jsonobj), so unlike json.Unmarshal it neither uses reflection nor copies
// values: each value is a sub-slice of b (capacity capped), which the caller
// must not modify while it uses the map.
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(b) {
		return unmarshalMembers(b)
	}
	m := make(map[string]json.RawMessage, 8)
	if !jsonobj.Each(b, func(name string, value []byte) bool {
		m[name] = value
		return true
	}) {
		// null, or a JSON value of another kind: json.Unmarshal says which.
		return unmarshalMembers(b)
	}
	return m, nil
}

func unmarshalMembers(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := json.Unmarshal(b, &m)
	return m, err
}

// decodeString decodes a JSON string value the way json.Unmarshal into a
// string does; ok is false for any other value.
func decodeString(raw []byte) (string, bool) { return jsonobj.String(raw) }
