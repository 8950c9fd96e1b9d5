package spool

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuffer(t *testing.T) {
	data := make([]byte, 10000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name     string
		memLimit int
		n        int
		useRead  bool
	}{
		{"memory only", 20000, 10000, false},
		{"memory only readfrom", 20000, 10000, true},
		{"exactly memory", 10000, 10000, true},
		{"spills", 1000, 10000, false},
		{"spills readfrom", 1000, 10000, true},
		{"file only", 0, 10000, true},
		{"empty", 100, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.memLimit, t.TempDir())
			defer b.Close()
			for round := 0; round < 2; round++ { // second round after Reset
				src := data[:tt.n]
				if tt.useRead {
					n, err := b.ReadFrom(bytes.NewReader(src))
					if err != nil || n != int64(len(src)) {
						t.Fatalf("ReadFrom = %d, %v", n, err)
					}
				} else {
					for p := src; len(p) > 0; {
						k := min(len(p), 777)
						if _, err := b.Write(p[:k]); err != nil {
							t.Fatal(err)
						}
						p = p[k:]
					}
				}
				if b.Len() != int64(len(src)) {
					t.Fatalf("Len = %d, want %d", b.Len(), len(src))
				}
				if cap(b.mem) > tt.memLimit {
					t.Fatalf("memory %d over limit %d", cap(b.mem), tt.memLimit)
				}
				got, err := io.ReadAll(b.Reader())
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(src, got); diff != "" && !(len(src) == 0 && len(got) == 0) {
					t.Fatalf("round %d: content differs", round)
				}
				if err := b.Reset(); err != nil {
					t.Fatal(err)
				}
				if b.Len() != 0 {
					t.Fatalf("Len after Reset = %d", b.Len())
				}
			}
		})
	}
}
