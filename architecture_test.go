package sluice

import (
	"os/exec"
	"strings"
	"testing"
)

// Packages that upstream applications import must not pull in the proxy:
// an application verifying an identity header or an upload description,
// or registering itself with a balancer, depends on them and on internal
// mechanisms, never on the core package or another feature package.
func TestAppPackagesDoNotImportCore(t *testing.T) {
	const module = "github.com/sluiceproxy/sluice"
	// go test puts its own go command first in the PATH of the tests.
	for _, pkg := range []string{module + "/identity", module + "/upload", module + "/balance/register"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			ours := dep == module || strings.HasPrefix(dep, module+"/")
			if ours && dep != pkg && !strings.HasPrefix(dep, module+"/internal/") {
				t.Errorf("%s imports %s: upstream applications would depend on it", pkg, dep)
			}
		}
	}
}
