package main

import (
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The demo identity provider: a login form that accepts any user name
// (this is a demo), a session cookie, and the /sso/auth endpoint the
// gateway asks about every request to a tool (a subrequest, as nginx
// auth_request or Traefik ForwardAuth would).
const (
	sessionCookie  = "sso_session"
	headerEmail    = "X-Sluice-User-Email"
	headerName     = "X-Sluice-User-Name"
	headerAudience = "X-Sluice-Audience" // the tool an identity is for
)

type idp struct {
	store  sessionStore
	ttl    time.Duration
	secure bool // Secure cookies (behind TLS)
}

// handler serves the identity provider. Login and logout are POSTs that
// other sites cannot make on a visitor's behalf (login CSRF would sign
// the visitor in as the attacker; logout CSRF signs them out):
// http.CrossOriginProtection refuses cross-origin browser requests by
// their Sec-Fetch-Site or Origin header.
func (p *idp) handler() http.Handler {
	csrf := http.NewCrossOriginProtection()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sso/login", p.loginForm)
	mux.Handle("POST /sso/login", csrf.Handler(http.HandlerFunc(p.login)))
	mux.Handle("POST /sso/logout", csrf.Handler(http.HandlerFunc(p.logout)))
	mux.HandleFunc("/sso/auth", p.auth)
	return mux
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<title>Sign in</title>
<h1>Sign in to the analysis tools</h1>
<p>Demo identity provider: any name is accepted.</p>
<form method="post" action="/sso/login">
<input type="hidden" name="next" value="{{.}}">
<label>Name <input name="user" autofocus required pattern="[a-z][a-z0-9._-]{0,31}"></label>
<button>Sign in</button>
</form>
`))

// safeNext keeps the post-login redirect on this site: it returns next
// if it is a path on this site, "/" otherwise. Browsers drop tabs and
// newlines from a Location and read "\\" as "/", so "/\t/evil.com" would
// take them to evil.com: next must start with one "/" followed by
// neither "/" nor "\\", and hold no control byte or backslash, before
// and after percent-decoding.
func safeNext(next string) string {
	if len(next) > 2048 {
		return "/"
	}
	decoded, err := url.PathUnescape(next)
	if err != nil {
		return "/"
	}
	for _, s := range [2]string{next, decoded} {
		if s == "" || s[0] != '/' || len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
			return "/"
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < ' ' || c == 0x7f || c == '\\' {
				return "/"
			}
		}
	}
	return next
}

func (p *idp) loginForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, safeNext(r.URL.Query().Get("next")))
}

func validUser(name string) bool {
	if name == "" || len(name) > 32 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (p *idp) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	name := r.PostFormValue("user")
	if !validUser(name) {
		http.Error(w, "user name: lower-case letters, digits, '.', '_', '-'", http.StatusBadRequest)
		return
	}
	u := user{Email: name + "@example.com", Name: strings.ToUpper(name[:1]) + name[1:]}
	id, err := p.store.Create(r.Context(), u)
	if err != nil {
		slog.Error("sso-gateway: creating session", "err", err)
		http.Error(w, "session store unavailable", http.StatusServiceUnavailable)
		return
	}
	http.SetCookie(w, p.cookie(id, int(p.ttl/time.Second)))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (p *idp) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && validSessionID(c.Value) {
		_ = p.store.Delete(r.Context(), c.Value)
	}
	http.SetCookie(w, p.cookie("", -1))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (p *idp) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode}
}

// auth answers the gateway's subrequest: 200 with the identity headers
// and a refreshed cookie for a live session; otherwise a redirect to the
// login form for browsers and 401 for API clients.
func (p *idp) auth(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && validSessionID(c.Value) {
		u, ok, err := p.store.Get(r.Context(), c.Value)
		if err != nil {
			slog.Error("sso-gateway: reading session", "err", err)
			http.Error(w, "session store unavailable", http.StatusServiceUnavailable)
			return
		}
		if ok {
			w.Header().Set(headerEmail, u.Email)
			w.Header().Set(headerName, u.Name)
			http.SetCookie(w, p.cookie(c.Value, int(p.ttl/time.Second)))
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if isBrowser(r) {
		next := r.Header.Get("X-Forwarded-Uri")
		w.Header().Set("Location", "/sso/login?next="+url.QueryEscape(safeNext(next)))
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "login required", "login": "/sso/login"})
}

// isBrowser tells a page load from an API call: browsers ask for HTML.
func isBrowser(r *http.Request) bool {
	return r.Header.Get("X-Requested-With") == "" && strings.Contains(r.Header.Get("Accept"), "text/html")
}
