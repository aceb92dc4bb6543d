package config

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readVariables returns the names Load reads.
func readVariables(t *testing.T) []string {
	t.Helper()
	var names []string
	m := minimal()
	_, _ = Load(func(k string) string {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
		return m[k]
	})
	slices.Sort(names)
	return names
}

// envExample returns the variables of .env.example and the values given to
// the commented-out ones (the defaults it documents).
func envExample(t *testing.T) (names []string, defaults map[string]string) {
	t.Helper()
	f, err := os.Open("../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defaults = map[string]string{}
	line := regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]+)=(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		names = append(names, m[2])
		if m[1] == "#" {
			defaults[m[2]] = m[3]
		}
	}
	slices.Sort(names)
	return names, defaults
}

// readmeVariables returns the variables of the README's configuration table.
func readmeVariables(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(b), "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]+)` \\|").FindAllStringSubmatch(section, -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	return names
}

func TestContract_READMEAndEnvExampleListEveryVariable(t *testing.T) {
	read := readVariables(t)
	example, _ := envExample(t)
	if diff := cmp.Diff(read, readmeVariables(t)); diff != "" {
		t.Errorf("README configuration table vs the variables Load reads (-read +README):\n%s", diff)
	}
	if diff := cmp.Diff(read, example); diff != "" {
		t.Errorf(".env.example vs the variables Load reads (-read +.env.example):\n%s", diff)
	}
}

func TestContract_EnvExampleDefaultsAreLoadsDefaults(t *testing.T) {
	_, defaults := envExample(t)
	withDefaults := minimal()
	for k, v := range defaults {
		withDefaults[k] = v
	}
	got, err := Load(env(withDefaults))
	if err != nil {
		t.Fatalf("Load with the documented defaults: %v", err)
	}
	want, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("setting .env.example's documented defaults changes the configuration (-unset +set):\n%s", diff)
	}
}
