// Package spool holds a bounded stretch of a stream so that it can be sent
// with a known length: the first bytes in memory, the rest in an unlinked
// temporary file. Memory use is fixed when the Buffer is made, whatever
// the amount written.
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Buffer is a byte buffer that keeps at most MemLimit bytes in memory and
// spills the rest to a temporary file. The zero value is not usable; make
// one with New. A Buffer is not safe for concurrent use.
type Buffer struct {
	mem      []byte
	memLimit int
	dir      string
	f        *os.File
	fileLen  int64
}

// New returns a Buffer that keeps up to memLimit bytes in memory and
// creates its temporary file, when needed, in dir (os.TempDir if empty).
// The memory is allocated on first use.
func New(memLimit int, dir string) *Buffer {
	if memLimit < 0 {
		memLimit = 0
	}
	return &Buffer{memLimit: memLimit, dir: dir}
}

// Len returns the number of bytes held.
func (b *Buffer) Len() int64 { return int64(len(b.mem)) + b.fileLen }

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	n := 0
	if room := b.memLimit - len(b.mem); room > 0 && b.fileLen == 0 {
		m := min(room, len(p))
		b.grow()
		b.mem = append(b.mem, p[:m]...)
		n, p = m, p[m:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if err := b.openFile(); err != nil {
		return n, err
	}
	m, err := b.f.Write(p)
	b.fileLen += int64(m)
	return n + m, err
}

// ReadFrom appends everything r yields until io.EOF. Bytes bound for
// memory are read straight into it; the rest goes to the file through
// os.File.ReadFrom, which can use copy_file_range or splice.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for b.fileLen == 0 && len(b.mem) < b.memLimit {
		b.grow()
		n, err := r.Read(b.mem[len(b.mem):b.memLimit])
		b.mem = b.mem[:len(b.mem)+n]
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	if err := b.openFile(); err != nil {
		return total, err
	}
	n, err := b.f.ReadFrom(r)
	b.fileLen += n
	return total + n, err
}

func (b *Buffer) grow() {
	if b.mem == nil {
		b.mem = make([]byte, 0, b.memLimit)
	}
}

func (b *Buffer) openFile() error {
	if b.f != nil {
		return nil
	}
	f, err := os.CreateTemp(b.dir, "sluice-spool-*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// Unlink at once: the data lives as long as the descriptor, and a
	// crash leaves nothing behind.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	b.f = f
	return nil
}

// Reader returns a reader of the bytes held, from the first. It is valid
// until the next Write, ReadFrom, Reset or Close. Reading it again from
// the start takes a new call to Reader.
func (b *Buffer) Reader() io.Reader {
	if b.fileLen == 0 {
		return bytes.NewReader(b.mem)
	}
	return io.MultiReader(bytes.NewReader(b.mem), io.NewSectionReader(b.f, 0, b.fileLen))
}

// Reset empties the buffer, keeping its memory and file for reuse.
func (b *Buffer) Reset() error {
	b.mem = b.mem[:0]
	if b.f != nil && b.fileLen > 0 {
		b.fileLen = 0
		if err := b.f.Truncate(0); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if _, err := b.f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// Close releases the file and the memory. The Buffer must not be used
// afterwards.
func (b *Buffer) Close() error {
	b.mem = nil
	if b.f == nil {
		return nil
	}
	err := b.f.Close()
	b.f = nil
	b.fileLen = 0
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}
