// Package linefilter splits a byte stream that arrives in chunks into
// lines, with memory bounded by the longest line allowed.
package linefilter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrLineTooLong is returned when a line is longer than the Splitter's
// limit: the Splitter cannot hold it to pass it whole to the callback.
var ErrLineTooLong = errors.New("linefilter: line too long")

// Splitter cuts a stream into lines ending in "\n" (or "\r\n"), passes
// each line without its terminator to Func and writes Func's result
// followed by the original terminator. Lines contained in one chunk are
// passed without copying; only a line split across chunks is buffered.
type Splitter struct {
	// Func returns the replacement of line. It may return line itself
	// (unchanged) or a slice of it; line is only valid during the call.
	Func func(line []byte) []byte

	// Max is the longest line, terminator excluded, that the Splitter
	// accepts. It must be positive.
	Max int

	partial []byte
}

// Feed passes chunk through the Splitter, writing the filtered lines to
// dst. When end is true the stream is over and a last line without
// terminator is filtered too.
func (s *Splitter) Feed(dst io.Writer, chunk []byte, end bool) error {
	if len(s.partial) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if len(s.partial)+len(chunk) > s.Max+1 { // +1: a '\r' waiting for its '\n'
				return fmt.Errorf("%w: over %d bytes", ErrLineTooLong, s.Max)
			}
			s.partial = append(s.partial, chunk...)
			if end {
				return s.flush(dst)
			}
			return nil
		}
		if len(s.partial)+i > s.Max+1 {
			return fmt.Errorf("%w: over %d bytes", ErrLineTooLong, s.Max)
		}
		s.partial = append(s.partial, chunk[:i+1]...)
		if err := s.line(dst, s.partial); err != nil {
			return err
		}
		s.partial = s.partial[:0]
		chunk = chunk[i+1:]
	}
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if len(chunk) > s.Max+1 {
				return fmt.Errorf("%w: over %d bytes", ErrLineTooLong, s.Max)
			}
			s.partial = append(s.partial, chunk...)
			break
		}
		if err := s.line(dst, chunk[:i+1]); err != nil {
			return err
		}
		chunk = chunk[i+1:]
	}
	if end {
		return s.flush(dst)
	}
	return nil
}

// flush filters the last line of the stream, which has no "\n".
func (s *Splitter) flush(dst io.Writer) error {
	if len(s.partial) == 0 {
		return nil
	}
	if len(s.partial) > s.Max {
		return fmt.Errorf("%w: over %d bytes", ErrLineTooLong, s.Max)
	}
	_, err := dst.Write(s.Func(s.partial))
	s.partial = s.partial[:0]
	return err
}

// line filters one line that ends in '\n'.
func (s *Splitter) line(dst io.Writer, line []byte) error {
	term := 1
	if len(line) >= 2 && line[len(line)-2] == '\r' {
		term = 2
	}
	body := line[:len(line)-term]
	if len(body) > s.Max {
		return fmt.Errorf("%w: over %d bytes", ErrLineTooLong, s.Max)
	}
	if _, err := dst.Write(s.Func(body)); err != nil {
		return err
	}
	_, err := dst.Write(line[len(line)-term:])
	return err
}
