// Package examples holds no code: each starter service is a main package
// in its own directory. Its tests check the tree around them.
package examples

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot returns the root of the git work tree holding this package.
// The checks below are about what git tracks, so outside a git checkout
// (a module downloaded from a proxy) there is nothing to check.
func repoRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: cannot check what the repository tracks")
	}
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skip("not in a git checkout: nothing tracked to check")
	}
	return strings.TrimSpace(string(out))
}

// executableMagic are the first bytes of the executable formats Go builds
// (ELF, Mach-O 32/64 bit both byte orders, PE).
var executableMagic = [][]byte{
	[]byte("\x7fELF"),
	{0xfe, 0xed, 0xfa, 0xce}, {0xce, 0xfa, 0xed, 0xfe},
	{0xfe, 0xed, 0xfa, 0xcf}, {0xcf, 0xfa, 0xed, 0xfe},
	[]byte("MZ"),
}

// TestNoBuiltFilesTracked fails when git tracks a compiled executable: a
// starter is copied into production, and a stale binary next to its
// source is neither reviewed nor rebuilt.
func TestNoBuiltFilesTracked(t *testing.T) {
	root := repoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		f, err := os.Open(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 4)
		n, _ := io.ReadFull(f, head)
		f.Close()
		for _, magic := range executableMagic {
			if bytes.HasPrefix(head[:n], magic) {
				t.Errorf("git tracks the executable %s: git rm --cached it and add it to .gitignore", name)
			}
		}
	}
}

// TestExampleBinariesIgnored checks that the binary `go build` writes for
// each main package under examples/ is ignored by git, wherever it is
// built from: in the package's directory, in examples/, or at the root.
func TestExampleBinariesIgnored(t *testing.T) {
	root := repoRoot(t)
	var mains []string // directories of main packages, relative to root
	err := filepath.WalkDir(filepath.Join(root, "examples"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(src, []byte("package main\n")) || bytes.Contains(src, []byte("\npackage main\n")) {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			mains = append(mains, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var paths []string
	for _, dir := range mains {
		base := path.Base(dir)
		for _, p := range []string{path.Join(dir, base), path.Join("examples", base), base} {
			if !seen[p] && !isDir(filepath.Join(root, p)) {
				seen[p] = true
				paths = append(paths, p)
			}
		}
	}
	if len(paths) < 7 {
		t.Fatalf("found only %v: the walk for main packages is broken", mains)
	}
	for _, p := range append(paths, "examples/balancer/x.test", "cover.out", "x.exe") {
		// check-ignore --no-index: a path counts as ignored by the
		// patterns alone, whether or not git tracks it.
		cmd := exec.Command("git", "-C", root, "check-ignore", "-q", "--no-index", p)
		if err := cmd.Run(); err != nil {
			t.Errorf("%s is not ignored by .gitignore (git check-ignore: %v)", p, err)
		}
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
