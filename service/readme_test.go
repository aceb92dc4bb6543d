package service_test

import (
	"os"
	"strings"
	"testing"
)

// The README's vendor program is this package's Example_vendorWorker, so the
// example test compiles exactly what the README shows.
func TestREADME_VendorExampleIsTheCompiledExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const start = "```go\npackage main\n"
	_, block, ok := strings.Cut(string(readme), start)
	if !ok {
		t.Fatal("README.md has no ```go block starting with package main")
	}
	block, _, ok = strings.Cut(block, "\n```")
	if !ok {
		t.Fatal("README.md's vendor example is not closed")
	}
	want := "package service_test\n" + strings.Replace(block, "func main() {", "func Example_vendorWorker() {", 1) + "\n"
	got, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("service/example_test.go differs from the README's vendor example:\n--- README (as an example) ---\n%s\n--- example_test.go ---\n%s", want, got)
	}
	var ours []string
	for _, line := range strings.Split(block, "\n") {
		if strings.Contains(line, `"github.com/connectrelay/connectrelay`) {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	if len(ours) > 2 {
		t.Errorf("the vendor example imports %d packages of ours, want at most 2: %v", len(ours), ours)
	}
}
