// Package grpctest tests gRPC through sluice.Proxy with a real
// google.golang.org/grpc client and server: grpc-go's interop test cases
// (google.golang.org/grpc/interop) and checks of status details,
// metadata, deadlines, cancellation and 4 MiB messages, for every
// combination of a front (how gRPC clients reach the Proxy: h2c or TLS)
// and an upstream (h2c, or TLS with a client certificate). Its benchmark
// compares unary calls through sluice with the same through
// httputil.ReverseProxy.
//
// It is a module of its own, so that importing sluice never pulls gRPC
// in; go.work ties it to the library, and the README's test command and
// .ci/run name it, since ./... does not descend into nested modules.
package grpctest
