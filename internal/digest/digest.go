// Package digest computes several hashes of a stream in one pass.
package digest

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
)

// Names lists the supported hash names, in the order Sums reports them.
var Names = []string{"md5", "sha1", "sha256", "sha512"}

// Set is an io.Writer feeding every byte to each of its hashes.
type Set struct {
	names  []string
	hashes []hash.Hash
}

// New returns a Set computing the named hashes (see Names). Duplicates
// are ignored; an unknown name is an error.
func New(names []string) (*Set, error) {
	s := &Set{}
	for _, n := range names {
		if slices.Contains(s.names, n) {
			continue
		}
		var h hash.Hash
		switch n {
		case "md5":
			h = md5.New()
		case "sha1":
			h = sha1.New()
		case "sha256":
			h = sha256.New()
		case "sha512":
			h = sha512.New()
		default:
			return nil, fmt.Errorf("digest: unknown hash %q (supported: md5, sha1, sha256, sha512)", n)
		}
		s.names = append(s.names, n)
		s.hashes = append(s.hashes, h)
	}
	return s, nil
}

// Write adds p to every hash. It never fails.
func (s *Set) Write(p []byte) (int, error) {
	for _, h := range s.hashes {
		h.Write(p)
	}
	return len(p), nil
}

// Sums returns the lower-case hex digest of each hash by name.
func (s *Set) Sums() map[string]string {
	m := make(map[string]string, len(s.names))
	for i, n := range s.names {
		m[n] = hex.EncodeToString(s.hashes[i].Sum(nil))
	}
	return m
}
