module github.com/sluiceproxy/sluice/robustness

go 1.26.0

replace github.com/sluiceproxy/sluice => ../

require (
	github.com/Shopify/toxiproxy/v2 v2.12.0
	github.com/gobwas/ws v1.4.0
	github.com/google/go-cmp v0.7.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
