package wsmsg

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestAcceptDeflateOffer(t *testing.T) {
	tests := []struct {
		offer []string
		want  bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"permessage-deflate"}, true},
		{[]string{"permessage-deflate; client_max_window_bits"}, true},
		{[]string{`permessage-deflate; client_max_window_bits="10"`}, true},
		{[]string{"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}, true},
		// The proxy compresses with a 32 KiB window and answers with no
		// window parameter: an offer that limits the server's is declined.
		{[]string{"permessage-deflate; server_max_window_bits=10"}, false},
		{[]string{"permessage-deflate; server_max_window_bits=10, permessage-deflate"}, true},
		{[]string{"x-webkit-deflate-frame", "permessage-deflate"}, true},
		{[]string{"x-webkit-deflate-frame"}, false},
		{[]string{"permessage-deflate; unknown_parameter"}, false},
		{[]string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, false},
		{[]string{"permessage-deflate; client_max_window_bits=16"}, false},
		{[]string{"permessage-deflate; server_no_context_takeover=x"}, false},
		{[]string{`permessage-deflate; "quoted"`}, false},
	}
	for _, tt := range tests {
		if got := acceptDeflateOffer(tt.offer); got != tt.want {
			t.Errorf("acceptDeflateOffer(%q) = %v, want %v", tt.offer, got, tt.want)
		}
	}
}

func TestCheckDeflateResponse(t *testing.T) {
	tests := []struct {
		response []string
		want     bool
		bad      string // in the error, "" for none
	}{
		{nil, false, ""},
		{[]string{"permessage-deflate; server_no_context_takeover"}, true, ""},
		{[]string{"permessage-deflate;server_no_context_takeover;client_no_context_takeover;server_max_window_bits=10"}, true, ""},
		{[]string{"permessage-deflate"}, false, "without server_no_context_takeover"},
		{[]string{"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"}, false, "client_max_window_bits"},
		{[]string{"permessage-deflate; server_no_context_takeover; server_max_window_bits=16"}, false, "server_max_window_bits"},
		{[]string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, false, "duplicate"},
		{[]string{"permessage-deflate; server_no_context_takeover; other"}, false, "unexpected"},
		{[]string{"permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"}, false, "unexpected extensions"},
		{[]string{"x-foo"}, false, "unexpected extensions"},
		{[]string{"permessage-deflate; =x"}, false, "malformed"},
	}
	for _, tt := range tests {
		h := http.Header{"Sec-Websocket-Extensions": tt.response}
		got, err := checkDeflateResponse(h)
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("checkDeflateResponse(%q): %v", tt.response, err)
		case tt.bad != "" && (err == nil || !errors.Is(err, errBadResponse) || !strings.Contains(err.Error(), tt.bad)):
			t.Errorf("checkDeflateResponse(%q): error %v, want a malformed response about %q", tt.response, err, tt.bad)
		case got != tt.want:
			t.Errorf("checkDeflateResponse(%q) = %v, want %v", tt.response, got, tt.want)
		}
	}
}

// TestDeflateRoundTrip: what deflate produces, inflate restores, and
// inflate stops at the size limit.
func TestDeflateRoundTrip(t *testing.T) {
	msg := bytes.Repeat([]byte("sluice "), 1000)
	var buf bytes.Buffer
	if err := deflate(&buf, msg); err != nil {
		t.Fatal(err)
	}
	if buf.Len() >= len(msg) {
		t.Errorf("deflated %d bytes to %d", len(msg), buf.Len())
	}
	got, err := inflate(nil, buf.Bytes(), int64(len(msg)))
	if err != nil || !bytes.Equal(got, msg) {
		t.Errorf("inflate: %d bytes, %v", len(got), err)
	}
	if _, err := inflate(nil, buf.Bytes(), int64(len(msg)-1)); err == nil {
		t.Errorf("inflate over the limit succeeded")
	}
}
