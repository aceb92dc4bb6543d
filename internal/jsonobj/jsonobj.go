// Package jsonobj walks JSON objects that are already known to be valid
// (json.Valid) without reflection or copies, with the results encoding/json
// would give: member names decoded as it decodes them, values as the exact
// bytes a json.RawMessage would hold.
package jsonobj

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Members is json.Unmarshal of b into a map[string]json.RawMessage, with its
// result and error: the same error for input that is not JSON or not an
// object, a nil map and no error for null, the last value of a name given
// twice. A valid object is walked (Each) instead of decoded by reflection, so
// each value is a sub-slice of b (capacity capped), which the caller must not
// modify while it uses the map.
func Members(b []byte) (map[string]json.RawMessage, error) {
	if json.Valid(b) {
		m := make(map[string]json.RawMessage, 8)
		if Each(b, func(name string, value []byte) bool {
			m[name] = value
			return true
		}) {
			return m, nil
		}
	}
	// Not JSON, null, or a JSON value of another kind: json.Unmarshal says
	// which.
	var m map[string]json.RawMessage
	err := json.Unmarshal(b, &m)
	return m, err
}

// ErrNotObject is Unique's error for valid JSON that is not an object.
var ErrNotObject = errors.New("jsonobj: not a JSON object")

// DuplicateError is Unique's error for a member name given twice.
type DuplicateError struct {
	// Name is the name, decoded.
	Name string
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("jsonobj: member %q appears more than once", e.Name)
}

// Unique collects the members of the JSON object b, which must be valid JSON
// (json.Valid), as Members does, but refuses a name given twice
// (*DuplicateError, for the first repeated name) and anything but an object
// (ErrNotObject). Callers that parse signed or stored data use it: two
// parsers reading a duplicated name differently is how data gets smuggled.
func Unique(b []byte) (map[string]json.RawMessage, error) {
	m := make(map[string]json.RawMessage, 8)
	var dup *DuplicateError
	if !Each(b, func(name string, value []byte) bool {
		if _, seen := m[name]; seen {
			dup = &DuplicateError{Name: name}
			return false
		}
		m[name] = value
		return true
	}) {
		return nil, ErrNotObject
	}
	if dup != nil {
		return nil, dup
	}
	return m, nil
}

// Each calls fn with each member of the JSON object b, in order, until fn
// returns false: the name decoded as json.Unmarshal into a string decodes it
// and the value's bytes, a sub-slice of b with its capacity capped. b must be
// valid JSON (json.Valid); Each reports false, without calling fn, when it is
// not an object.
func Each(b []byte, fn func(name string, value []byte) bool) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for i < len(b) {
		end := stringEnd(b, i)
		name, ok := String(b[i:end])
		if !ok {
			return true // not valid JSON after all; not reached for valid input
		}
		i = skipSpace(b, end) // at ':'
		i = skipSpace(b, i+1) // at the value
		end = valueEnd(b, i)
		if !fn(name, b[i:end:end]) {
			return true
		}
		i = skipSpace(b, end) // at ',' or '}'
		if i >= len(b) || b[i] == '}' {
			return true
		}
		i = skipSpace(b, i+1)
	}
	return true
}

// String decodes a JSON string value the way json.Unmarshal into a
// string does; ok is false for any other value.
func String(raw []byte) (s string, ok bool) {
	if s, ok := plain(raw); ok {
		return s, true
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// plain returns the content of a quoted JSON string without escapes
// whose bytes are valid UTF-8, which encoding/json would copy verbatim; ok is
// false for anything else (the caller then falls back to json.Unmarshal).
func plain(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < ' ' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// The walkers below assume b is valid JSON.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i] ('"').
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}
