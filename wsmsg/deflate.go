package wsmsg

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// deflateParams are the permessage-deflate parameters the proxy offers the
// upstream and answers the client with (RFC 7692 §7.1): no context
// takeover either way, so that every message is compressed and
// decompressed on its own, with pooled state.
var deflateParams = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}

var (
	deflateOffer    = formatExtension(deflateParams.Option())
	deflateResponse = deflateOffer
)

func formatExtension(opt httphead.Option) string {
	var b strings.Builder
	_, _ = httphead.WriteOptions(&b, []httphead.Option{opt})
	return b.String()
}

// acceptDeflateOffer reports whether one of the client's permessage-deflate
// offers can be accepted with deflateResponse, as wsflate.Extension
// negotiates (RFC 7692 §7.1): an offer with a parameter it does not know,
// a duplicate or an invalid value is skipped, and so is one with
// server_max_window_bits, since the proxy compresses with a 32 KiB window
// and does not answer with a window parameter.
func acceptDeflateOffer(vv []string) bool {
	offers, ok := wsframe.ParseExtensions(vv)
	if !ok {
		return false
	}
	ext := wsflate.Extension{Parameters: deflateParams}
	for _, o := range offers {
		if _, err := ext.Negotiate(o); err != nil {
			continue
		}
		if _, accepted := ext.Accepted(); accepted {
			return true
		}
	}
	return false
}

// errBadResponse fails an upgrade whose 101 the proxy cannot honour: the
// client gets 502 (sluice.StatusFor).
var errBadResponse = errors.New("wsmsg: malformed upstream response")

// checkDeflateResponse checks the upstream's answer to deflateOffer
// (RFC 7692 §7.1) with wsflate.Parameters. It reports whether
// permessage-deflate was accepted; an answer the proxy cannot honour
// (another extension, context takeover by the server, a client window
// limit it did not offer) is a malformed response.
func checkDeflateResponse(h http.Header) (bool, error) {
	exts, ok := wsframe.ParseExtensions(h["Sec-Websocket-Extensions"])
	if !ok {
		return false, fmt.Errorf("%w: malformed Sec-WebSocket-Extensions", errBadResponse)
	}
	if len(exts) == 0 {
		return false, nil
	}
	if len(exts) > 1 || !bytes.Equal(exts[0].Name, wsflate.ExtensionNameBytes) {
		return false, fmt.Errorf("%w: unexpected extensions %q", errBadResponse, h["Sec-Websocket-Extensions"])
	}
	var p wsflate.Parameters
	if err := p.Parse(exts[0]); err != nil {
		return false, fmt.Errorf("%w: %w", errBadResponse, err)
	}
	if p.ClientMaxWindowBits.Defined() {
		return false, fmt.Errorf("%w: permessage-deflate with client_max_window_bits, which was not offered", errBadResponse)
	}
	if !p.ServerNoContextTakeover {
		return false, fmt.Errorf("%w: permessage-deflate without server_no_context_takeover", errBadResponse)
	}
	return true, nil
}

// minDeflate is the size under which messages are sent uncompressed even
// to a peer that negotiated permessage-deflate (RFC 7692 §6.1 lets each
// message choose).
const minDeflate = 64

var (
	deflateBufPool  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	flateWriterPool = sync.Pool{New: func() any {
		return wsflate.NewWriter(nil, func(w io.Writer) wsflate.Compressor {
			fw, _ := flate.NewWriter(w, flate.BestSpeed)
			return fw
		})
	}}
	flateReaderPool = sync.Pool{New: func() any {
		return wsflate.NewReader(nil, func(r io.Reader) wsflate.Decompressor {
			return &flateReader{flate.NewReader(r)}
		})
	}}
)

// flateReader lets wsflate.Reader reuse a flate reader (wsflate wants
// Reset(io.Reader); compress/flate has Reset(io.Reader, []byte)).
type flateReader struct{ io.ReadCloser }

func (f *flateReader) Reset(r io.Reader) { _ = f.ReadCloser.(flate.Resetter).Reset(r, nil) }

// deflate appends the permessage-deflate form of p to buf (RFC 7692 §7.2.1).
func deflate(buf *bytes.Buffer, p []byte) error {
	fw := flateWriterPool.Get().(*wsflate.Writer)
	defer flateWriterPool.Put(fw)
	fw.Reset(buf)
	if _, err := fw.Write(p); err != nil {
		return err
	}
	return fw.Flush()
}

// inflate appends the decompressed form of a permessage-deflate payload to
// dst, failing with 1009 beyond max bytes and 1007 on corrupt data.
func inflate(dst, payload []byte, max int64) ([]byte, error) {
	fr := flateReaderPool.Get().(*wsflate.Reader)
	defer flateReaderPool.Put(fr)
	fr.Reset(bytes.NewReader(payload))
	buf := bytes.NewBuffer(dst)
	n, err := buf.ReadFrom(io.LimitReader(fr, max+1))
	if err != nil {
		return nil, &wsframe.Error{Code: ws.StatusInvalidFramePayloadData, Reason: "corrupt compressed message"}
	}
	if n > max {
		return nil, &wsframe.Error{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	}
	return buf.Bytes(), nil
}
