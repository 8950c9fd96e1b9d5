package grpctest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/testdata"
)

// The interop test cases report a failure with grpclog's Fatal, which
// exits the process; fatalLogger turns it into a panic that runCase
// recovers and reports on the test.
type fatalLogger struct{ grpclog.LoggerV2 }

type interopFailure struct{ msg string }

func (fatalLogger) Fatal(args ...any)   { panic(interopFailure{fmt.Sprint(args...)}) }
func (fatalLogger) Fatalln(args ...any) { panic(interopFailure{fmt.Sprint(args...)}) }
func (fatalLogger) Fatalf(format string, args ...any) {
	panic(interopFailure{fmt.Sprintf(format, args...)})
}

func TestMain(m *testing.M) {
	grpclog.SetLoggerV2(fatalLogger{grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr)})
	os.Exit(m.Run())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A front is how gRPC clients reach the Proxy: a server speaking HTTP/2
// in front of it. start serves h and returns the address to dial and
// the client's transport credentials.
//
// sluice.Server does not speak HTTP/2 yet (branch tlsh2 adds it); once
// it does, it is one more entry in fronts.
type front struct {
	name  string
	start func(t testing.TB, h http.Handler) (addr string, creds credentials.TransportCredentials)
}

var fronts = []front{
	{"h2c net/http", h2cFront},
	{"tls net/http", tlsFront},
}

// h2cFront serves h over HTTP/2 with prior knowledge, as gRPC clients
// without TLS speak it, with net/http's server. (x/net's h2c.NewHandler,
// deprecated, gives way to http.Server.Protocols.)
func h2cFront(t testing.TB, h http.Handler) (string, credentials.TransportCredentials) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), insecure.NewCredentials()
}

// tlsFront serves h over TLS with HTTP/2 (ALPN h2).
func tlsFront(t testing.TB, h http.Handler) (string, credentials.TransportCredentials) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.EnableHTTP2 = true
	s.StartTLS()
	t.Cleanup(s.Close)
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return strings.TrimPrefix(s.URL, "https://"), credentials.NewTLS(&tls.Config{RootCAs: pool})
}

// upstream is a grpc-go server with the interop TestService, wrapped to
// record what the upstream saw (deadlines, the end of streams) and to
// answer a status with details.
type upstream struct {
	target *url.URL    // for the Proxy's Director
	tls    *tls.Config // the Proxy's UpstreamTLS, nil for h2c
	// deadline receives the time left before each unary call's deadline
	// as the upstream saw it (-1 for none); streamEnd the context error
	// of each streaming call when its handler returned.
	deadline  chan time.Duration
	streamEnd chan error
}

// An upstreamKind starts an upstream.
type upstreamKind struct {
	name  string
	start func(t testing.TB) *upstream
}

var upstreamKinds = []upstreamKind{
	{"h2c upstream", func(t testing.TB) *upstream { return startUpstream(t, false) }},
	{"mTLS upstream", func(t testing.TB) *upstream { return startUpstream(t, true) }},
}

// detailsTrigger is the request payload that makes the upstream's
// UnaryCall fail with a status carrying details.
const detailsTrigger = "please fail with details"

type detailServer struct{ testpb.TestServiceServer }

func (s detailServer) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if string(in.GetPayload().GetBody()) == detailsTrigger {
		st, err := status.New(codes.FailedPrecondition, "with details").
			WithDetails(&testpb.Payload{Body: []byte("detail one")}, &testpb.EchoStatus{Code: 7, Message: "detail two"})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return s.TestServiceServer.UnaryCall(ctx, in)
}

// startUpstream starts the upstream: h2c, or TLS that requires a client
// certificate (mTLS) with grpc-go's test certificates (the server's is
// for *.test.example.com).
func startUpstream(t testing.TB, useTLS bool) *upstream {
	t.Helper()
	u := &upstream{deadline: make(chan time.Duration, 64), streamEnd: make(chan error, 64)}
	opts := []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			d := time.Duration(-1)
			if dl, ok := ctx.Deadline(); ok {
				d = time.Until(dl)
			}
			select {
			case u.deadline <- d:
			default:
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			select {
			case u.streamEnd <- ss.Context().Err():
			default:
			}
			return err
		}),
	}
	scheme := "h2c"
	if useTLS {
		scheme = "https"
		cert, err := tls.LoadX509KeyPair(testdata.Path("x509/server1_cert.pem"), testdata.Path("x509/server1_key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    loadPool(t, "x509/client_ca_cert.pem"),
		})))
		clientCert, err := tls.LoadX509KeyPair(testdata.Path("x509/client1_cert.pem"), testdata.Path("x509/client1_key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		u.tls = &tls.Config{
			RootCAs:      loadPool(t, "x509/server_ca_cert.pem"),
			ServerName:   "upstream.test.example.com",
			Certificates: []tls.Certificate{clientCert},
			MinVersion:   tls.VersionTLS13,
		}
	}
	s := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(s, detailServer{interop.NewTestServer()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() { s.Stop(); <-done })
	u.target = &url.URL{Scheme: scheme, Host: ln.Addr().String()}
	return u
}

func loadPool(t testing.TB, name string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(testdata.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", name)
	}
	return pool
}

// newProxy returns the Proxy under test in front of u.
func newProxy(u *upstream) *sluice.Proxy {
	return &sluice.Proxy{Director: &sluice.SingleHost{Target: u.target}, UpstreamTLS: u.tls, Logger: quiet()}
}

// dial connects a gRPC client to addr.
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// forEach runs f for every front and upstream, each pair with its own
// Proxy and client.
func forEach(t *testing.T, f func(t *testing.T, cc *grpc.ClientConn, u *upstream)) {
	for _, fr := range fronts {
		for _, uk := range upstreamKinds {
			t.Run(fr.name+"/"+uk.name, func(t *testing.T) {
				leaktest.Check(t)
				u := uk.start(t)
				p := newProxy(u)
				t.Cleanup(p.CloseIdleConnections)
				addr, creds := fr.start(t, p)
				f(t, dial(t, addr, creds), u)
			})
		}
	}
}

// runCase runs one interop test case, reporting its Fatal as a test
// failure.
func runCase(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if fail, ok := r.(interopFailure); ok {
				t.Fatalf("interop: %s", fail.msg)
			}
			panic(r)
		}
	}()
	f()
}

func TestInterop(t *testing.T) {
	type tc struct {
		name string
		run  func(ctx context.Context, tc testpb.TestServiceClient, cc *grpc.ClientConn)
	}
	cases := []tc{
		{"EmptyUnary", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoEmptyUnaryCall(ctx, c)
		}},
		{"LargeUnary", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoLargeUnaryCall(ctx, c)
		}},
		{"ClientStreaming", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoClientStreaming(ctx, c)
		}},
		{"ServerStreaming", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoServerStreaming(ctx, c)
		}},
		{"PingPong", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoPingPong(ctx, c)
		}},
		{"EmptyStream", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoEmptyStream(ctx, c)
		}},
		{"CancelAfterBegin", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCancelAfterBegin(ctx, c)
		}},
		{"CancelAfterFirstResponse", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCancelAfterFirstResponse(ctx, c)
		}},
		{"TimeoutOnSleepingServer", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoTimeoutOnSleepingServer(ctx, c)
		}},
		{"StatusCodeAndMessage", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoStatusCodeAndMessage(ctx, c)
		}},
		{"SpecialStatusMessage", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoSpecialStatusMessage(ctx, c)
		}},
		{"CustomMetadata", func(ctx context.Context, c testpb.TestServiceClient, _ *grpc.ClientConn) {
			interop.DoCustomMetadata(ctx, c)
		}},
		{"UnimplementedMethod", func(ctx context.Context, _ testpb.TestServiceClient, cc *grpc.ClientConn) {
			interop.DoUnimplementedMethod(ctx, cc)
		}},
		{"UnimplementedService", func(ctx context.Context, _ testpb.TestServiceClient, cc *grpc.ClientConn) {
			interop.DoUnimplementedService(ctx, testpb.NewUnimplementedServiceClient(cc))
		}},
	}
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, _ *upstream) {
		c := testpb.NewTestServiceClient(cc)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				runCase(t, func() { tc.run(ctx, c, cc) })
			})
		}
	})
}

func TestStatusDetails(t *testing.T) {
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, _ *upstream) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(detailsTrigger)}})
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition || st.Message() != "with details" {
			t.Fatalf("status %v, want FailedPrecondition \"with details\"", st)
		}
		var got []string
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *testpb.Payload:
				got = append(got, string(d.Body))
			case *testpb.EchoStatus:
				got = append(got, fmt.Sprint(d.Code, " ", d.Message))
			default:
				got = append(got, fmt.Sprintf("%T", d))
			}
		}
		if strings.Join(got, "|") != "detail one|7 detail two" {
			t.Errorf("details %q", got)
		}
	})
}

func TestMetadataBothWays(t *testing.T) {
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, _ *upstream) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The interop server echoes these two keys: the first in the
		// response's header, the second (binary) in its trailer.
		ctx = metadata.AppendToOutgoingContext(ctx,
			"x-grpc-test-echo-initial", "initial value",
			"x-grpc-test-echo-trailing-bin", string([]byte{0, 1, 2, 0xff}))
		var header, trailer metadata.MD
		_, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%q %q", header.Get("x-grpc-test-echo-initial"), trailer.Get("x-grpc-test-echo-trailing-bin"))
		if want := fmt.Sprintf("%q %q", []string{"initial value"}, []string{string([]byte{0, 1, 2, 0xff})}); got != want {
			t.Errorf("echoed metadata %s, want %s", got, want)
		}
	})
}

func TestDeadlinePropagated(t *testing.T) {
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, u *upstream) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := testpb.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
		// grpc-timeout reached the upstream, which set its own deadline.
		if d := <-u.deadline; d <= 0 || d > 5*time.Second {
			t.Errorf("upstream deadline in %v, want within 5s", d)
		}
		if _, err := testpb.NewTestServiceClient(cc).EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
		if d := <-u.deadline; d != -1 {
			t.Errorf("upstream deadline in %v for a call without one", d)
		}
	})
}

func TestCancellationReachesUpstream(t *testing.T) {
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, u *upstream) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-u.streamEnd:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("upstream stream ended with %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the cancellation did not reach the upstream")
		}
	})
}

func TestFourMiBMessages(t *testing.T) {
	const size = 4<<20 - 64 // the largest payload within gRPC's default 4 MiB message limit
	forEach(t, func(t *testing.T, cc *grpc.ClientConn, _ *upstream) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := testpb.NewTestServiceClient(cc)
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		res, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: size, Payload: &testpb.Payload{Body: body}})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.GetPayload().GetBody()); got != size {
			t.Errorf("response payload %d bytes, want %d", got, size)
		}
		// Both ways on one bidi stream, twice.
		stream, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			req := &testpb.StreamingOutputCallRequest{
				ResponseParameters: []*testpb.ResponseParameters{{Size: size}},
				Payload:            &testpb.Payload{Body: body},
			}
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
			res, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.GetPayload().GetBody()); got != size {
				t.Errorf("streamed payload %d bytes, want %d", got, size)
			}
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Errorf("end of stream: %v", err)
		}
	})
}

// TestGRPCOverHTTP1Refused checks that a gRPC request reaching the Proxy
// over HTTP/1.1 is refused with 505, and never reaches the upstream.
func TestGRPCOverHTTP1Refused(t *testing.T) {
	leaktest.Check(t)
	u := startUpstream(t, false)
	p := newProxy(u)
	t.Cleanup(p.CloseIdleConnections)
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequest("POST", s.URL+"/grpc.testing.TestService/EmptyCall", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusHTTPVersionNotSupported {
		t.Errorf("status %d, want 505", res.StatusCode)
	}
	select {
	case d := <-u.deadline:
		t.Errorf("the call reached the upstream (deadline %v)", d)
	default:
	}
}
