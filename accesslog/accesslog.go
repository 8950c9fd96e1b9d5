// Package accesslog writes an access log line for every exchange of a
// sluice.Proxy, from the Record the Proxy hands to its OnExchange hook:
// structured log/slog lines, or nginx's "combined" format for the tools
// that read it (GoAccess, AWStats, fail2ban, log shippers' parsers).
//
//	p.OnExchange = accesslog.Slog(slog.Default())
//	p.OnExchange = accesslog.Combined(os.Stdout)
//
// Lines are written on the request's goroutine as the exchange ends
// (after the response body, the error page or the end of the tunnel), so
// a writer that blocks holds the connection: give it a fast writer, or a
// buffered one you flush.
package accesslog

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/sluiceproxy/sluice"
)

// Slog returns an OnExchange hook that logs one line per exchange to
// logger with the message "access" at Info level (Warn when the exchange
// failed in a way the proxy or the upstream is to blame for: ErrorClass
// timeout, refused, bad_response, upstream, internal). Its attributes:
// method, host, path, query (if any), proto, route (if any), status,
// req_bytes, resp_bytes, duration, client, request_id (if any),
// upstream, upstream_header and connect (if an upstream was tried),
// attempts (if more than one), error_class and err (if any),
// close_code (if any), user_agent. Durations are time.Duration values
// (slog's text handler prints "1.234ms", its JSON handler nanoseconds).
func Slog(logger *slog.Logger) func(*sluice.Record) {
	return func(rec *sluice.Record) {
		level := slog.LevelInfo
		switch rec.ErrorClass {
		case "timeout", "refused", "bad_response", "upstream", "internal":
			level = slog.LevelWarn
		}
		if !logger.Enabled(context.Background(), level) {
			return
		}
		attrs := make([]slog.Attr, 0, 20)
		attrs = append(attrs,
			slog.String("method", rec.Method),
			slog.String("host", rec.Host),
			slog.String("path", rec.Path),
		)
		if rec.Query != "" {
			attrs = append(attrs, slog.String("query", rec.Query))
		}
		attrs = append(attrs, slog.String("proto", rec.Proto))
		if rec.Route != "" {
			attrs = append(attrs, slog.String("route", rec.Route))
		}
		attrs = append(attrs,
			slog.Int("status", rec.Status),
			slog.Int64("req_bytes", rec.RequestBytes),
			slog.Int64("resp_bytes", rec.ResponseBytes),
			slog.Duration("duration", rec.Duration),
		)
		if rec.Client.IsValid() {
			attrs = append(attrs, slog.String("client", rec.Client.String()))
		} else {
			attrs = append(attrs, slog.String("client", "-"))
		}
		if rec.RequestID != "" {
			attrs = append(attrs, slog.String("request_id", rec.RequestID))
		}
		if rec.Upstream != "" {
			attrs = append(attrs,
				slog.String("upstream", rec.Upstream),
				slog.Duration("upstream_header", rec.UpstreamHeader),
				slog.Duration("connect", rec.Connect),
			)
		}
		if len(rec.Attempts) > 1 {
			tried := make([]string, len(rec.Attempts))
			for i, a := range rec.Attempts {
				tried[i] = a.Upstream
			}
			attrs = append(attrs, slog.Int("attempts", len(rec.Attempts)), slog.String("tried", strings.Join(tried, ",")))
		}
		if rec.ErrorClass != "" {
			attrs = append(attrs, slog.String("error_class", rec.ErrorClass))
		}
		if rec.Err != nil {
			attrs = append(attrs, slog.String("err", rec.Err.Error()))
		}
		if rec.CloseCode != 0 {
			attrs = append(attrs, slog.Int("close_code", rec.CloseCode))
		}
		if rec.Request != nil {
			if ua := rec.Request.Header.Get("User-Agent"); ua != "" {
				attrs = append(attrs, slog.String("user_agent", ua))
			}
		}
		logger.LogAttrs(context.Background(), level, "access", attrs...)
	}
}

// Combined returns an OnExchange hook that writes one line per exchange
// to w in nginx's combined format:
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//
// with the client address as the Proxy decided it (ProxyRequest.ClientAddr,
// "-" if unknown), the user of a Basic Authorization or
// Proxy-Authorization header ("-" if none), the start of the exchange in
// the server's local time zone, the request line with the canonical
// target, the status the client got and the response body bytes. As
// nginx does, a double quote, a backslash and bytes outside printable
// ASCII in the quoted fields are written as \xHH. Each line is one Write
// to w, under a lock: w need not be safe for concurrent use.
func Combined(w io.Writer) func(*sluice.Record) {
	var mu sync.Mutex
	pool := sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
	return func(rec *sluice.Record) {
		bp := pool.Get().(*[]byte)
		b := appendCombined((*bp)[:0], rec)
		mu.Lock()
		_, _ = w.Write(b)
		mu.Unlock()
		*bp = b
		pool.Put(bp)
	}
}

func appendCombined(b []byte, rec *sluice.Record) []byte {
	if rec.Client.IsValid() {
		b = rec.Client.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - "...)
	b = appendEscaped(b, remoteUser(rec.Request))
	b = append(b, " ["...)
	b = rec.Start.Local().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, `] "`...)
	b = appendEscaped(b, rec.Method)
	b = append(b, ' ')
	if rec.Method == http.MethodConnect {
		b = appendEscaped(b, rec.Host)
	} else {
		b = appendEscaped(b, rec.Path)
		if rec.Query != "" {
			b = append(b, '?')
			b = appendEscaped(b, rec.Query)
		}
	}
	b = append(b, ' ')
	b = appendEscaped(b, rec.Proto)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(rec.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, rec.ResponseBytes, 10)
	referer, ua := "-", "-"
	if rec.Request != nil {
		if v := rec.Request.Header.Get("Referer"); v != "" {
			referer = v
		}
		if v := rec.Request.Header.Get("User-Agent"); v != "" {
			ua = v
		}
	}
	b = append(b, ` "`...)
	b = appendEscaped(b, referer)
	b = append(b, `" "`...)
	b = appendEscaped(b, ua)
	return append(b, "\"\n"...)
}

// remoteUser returns the user name of a Basic Authorization (or, for a
// forward proxy, Proxy-Authorization) header, "-" if there is none.
func remoteUser(r *http.Request) string {
	if r == nil {
		return "-"
	}
	for _, name := range [...]string{"Authorization", "Proxy-Authorization"} {
		v := r.Header.Get(name)
		scheme, creds, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "Basic") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(creds))
		if err != nil {
			continue
		}
		if user, _, ok := strings.Cut(string(raw), ":"); ok && user != "" {
			return user
		}
	}
	return "-"
}

// appendEscaped appends s with '"', '\\' and bytes outside printable
// ASCII as \xHH, as nginx's log escaping does.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}
