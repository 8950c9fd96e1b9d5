package digest

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSums(t *testing.T) {
	data := strings.Repeat("sluice digest ", 5000)
	s, err := New([]string{"md5", "sha1", "sha256", "sha512", "md5"})
	if err != nil {
		t.Fatal(err)
	}
	// Written in uneven pieces, as a stream arrives.
	r := strings.NewReader(data)
	buf := make([]byte, 333)
	if _, err := io.CopyBuffer(s, struct{ io.Reader }{r}, buf); err != nil {
		t.Fatal(err)
	}
	m5 := md5.Sum([]byte(data))
	s1 := sha1.Sum([]byte(data))
	s256 := sha256.Sum256([]byte(data))
	s512 := sha512.Sum512([]byte(data))
	want := map[string]string{
		"md5":    hex.EncodeToString(m5[:]),
		"sha1":   hex.EncodeToString(s1[:]),
		"sha256": hex.EncodeToString(s256[:]),
		"sha512": hex.EncodeToString(s512[:]),
	}
	if diff := cmp.Diff(want, s.Sums()); diff != "" {
		t.Fatalf("sums (-want +got):\n%s", diff)
	}
}

func TestUnknown(t *testing.T) {
	if _, err := New([]string{"crc32"}); err == nil {
		t.Fatal("New(crc32) succeeded")
	}
}
