package sluiceotel

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The library module pulls in no OpenTelemetry or Prometheus code: this
// module is opt-in. Checked on the packages of the root module and on
// its module graph.
func TestCoreDoesNotDependOnOpenTelemetry(t *testing.T) {
	for _, args := range [][]string{
		{"list", "-deps", "./..."},
		{"mod", "graph"},
	} {
		cmd := exec.Command("go", args...) // go test puts its own go command first in PATH
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "go.opentelemetry.io") || strings.Contains(line, "github.com/prometheus") {
				t.Errorf("go %s (root module): %s", strings.Join(args, " "), line)
			}
		}
		if len(out) == 0 {
			t.Errorf("go %s printed nothing", strings.Join(args, " "))
		}
	}
}
