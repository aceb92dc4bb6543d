package connectrelay_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/connectrelay/connectrelay"
)

func TestVersion_IsTheNewestReleaseOfTheChangelog(t *testing.T) {
	b, err := os.ReadFile("CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## \[?v?(\d+\.\d+\.\d+)\]?`).FindSubmatch(b)
	if m == nil {
		t.Fatal("CHANGELOG.md has no release heading like ## [0.2.0]")
	}
	if got := string(m[1]); got != connectrelay.Version {
		t.Errorf("newest release in CHANGELOG.md = %s, connectrelay.Version = %s", got, connectrelay.Version)
	}
}
