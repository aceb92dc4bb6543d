package tenant

import (
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// positionalSQL is a statement written with @name arguments turned into $n
// once, at start-up: pgx rewrites named arguments on every call, which cost
// about 5 % of the receiver's CPU per install.
type positionalSQL struct {
	sql   string
	names []string // the name of $1, $2, ...
}

var namedArg = regexp.MustCompile(`@([a-z_][a-z0-9_]*)`)

// positional rewrites sql's @name arguments (none may appear in a literal or
// comment) as $n, numbering names in order of first appearance.
func positional(sql string) positionalSQL {
	var p positionalSQL
	index := map[string]int{}
	p.sql = namedArg.ReplaceAllStringFunc(sql, func(m string) string {
		name := m[1:]
		i, ok := index[name]
		if !ok {
			p.names = append(p.names, name)
			i = len(p.names)
			index[name] = i
		}
		return fmt.Sprintf("$%d", i)
	})
	return p
}

// args orders named by the statement's arguments; a name named lacks is a
// bug and panics, as pgx would fail the query.
func (p positionalSQL) args(named pgx.NamedArgs) []any {
	out := make([]any, len(p.names))
	for i, n := range p.names {
		v, ok := named[n]
		if !ok {
			panic("tenant: no value for argument @" + n)
		}
		out[i] = v
	}
	return out
}
