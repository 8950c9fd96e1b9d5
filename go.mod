module github.com/sluiceproxy/sluice

go 1.26.0

require (
	github.com/gobwas/httphead v0.1.0
	github.com/gobwas/ws v1.4.0
	github.com/google/go-cmp v0.7.0
	golang.org/x/net v0.62.0
)

require (
	github.com/gobwas/pool v0.2.1 // indirect
	golang.org/x/text v0.43.0 // indirect
)
