package migration

import (
	"encoding/json"
	"unicode/utf8"
)

// objectMembers decodes a JSON object into its members, with the result of
// json.Unmarshal into a map[string]json.RawMessage: the same error for a body
// that is not JSON or not an object, a nil map and no error for null, the last
// value of a name given twice. It validates once and then walks the object,
// so unlike json.Unmarshal it neither uses reflection nor copies values: each
// value is a sub-slice of b (capacity capped), which the caller must not
// modify while it uses the map.
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(b) {
		return unmarshalMembers(b)
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		// null, or a JSON value of another kind: json.Unmarshal says which.
		return unmarshalMembers(b)
	}
	m := make(map[string]json.RawMessage, 8)
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return m, nil
	}
	for {
		end := stringEnd(b, i)
		key, ok := plainString(b[i:end])
		if !ok {
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return unmarshalMembers(b)
			}
		}
		i = skipSpace(b, end) // at ':'
		i = skipSpace(b, i+1) // at the value
		end = valueEnd(b, i)
		m[key] = b[i:end:end]
		i = skipSpace(b, end) // at ',' or '}'
		if b[i] == '}' {
			return m, nil
		}
		i = skipSpace(b, i+1)
	}
}

func unmarshalMembers(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := json.Unmarshal(b, &m)
	return m, err
}

// decodeString decodes a JSON string value the way json.Unmarshal into a
// string does; ok is false for any other value.
func decodeString(raw []byte) (s string, ok bool) {
	if s, ok := plainString(raw); ok {
		return s, true
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// plainString returns the content of a quoted JSON string without escapes
// whose bytes are valid UTF-8, which encoding/json would copy verbatim; ok is
// false for anything else (the caller then falls back to json.Unmarshal).
func plainString(raw []byte) (string, bool) {
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

// The walkers below assume b is valid JSON (objectMembers checked it).

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
