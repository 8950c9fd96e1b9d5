// Package conf holds the peers' configuration templates (nginx, HAProxy,
// Caddy, plain and TLS), the OpenSSL configuration for HAProxy with TLS,
// and wrk's reporting script. They are embedded in benchrun, which renders
// a template by replacing each {NAME} placeholder with its value and
// writes the result into the run's directory.
package conf

import (
	"embed"
	"strings"
)

//go:embed *.tmpl *.cnf *.lua
var files embed.FS

// Read returns the named file.
func Read(name string) (string, error) {
	b, err := files.ReadFile(name)
	return string(b), err
}

// Render returns text with every {NAME} of vars replaced by its value.
func Render(text string, vars map[string]string) string {
	pairs := make([]string, 0, 2*len(vars))
	for k, v := range vars {
		pairs = append(pairs, "{"+k+"}", v)
	}
	return strings.NewReplacer(pairs...).Replace(text)
}
