package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

var long = flag.Bool("long", false, "run the 5 GiB upload test")

// TestLongUpload5GiB streams 5 GiB of unknown length (chunked) through
// the proxy into versitygw as a multipart upload, and checks that the
// peak resident memory of the whole test process (client, application
// and proxy) stays under 64 MiB.
//
//	go test -run TestLongUpload5GiB -v ./examples/direct-upload -long
func TestLongUpload5GiB(t *testing.T) {
	if !*long {
		t.Skip("5 GiB upload: run with -long")
	}
	leaktest.Check(t)
	const size = 5 << 30
	e := newEnv(t, func(c *appConfig) {
		c.PartSize = 8 * mib
		c.MaxSize = size
		c.Hashes = []string{"md5", "sha256"}
	})
	if err := resetPeakRSS(); err != nil {
		t.Skipf("cannot measure peak RSS here: %v", err)
	}
	start := time.Now()
	res, err := e.hc.Do(mustRequest(http.MethodPut, e.url("/files/big"), chunked{&zeroReader{n: size}}))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(res.Body)
	res.Body.Close()
	elapsed := time.Since(start)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, answer)
	}
	peak, err := peakRSS()
	if err != nil {
		t.Fatal(err)
	}
	objs, _, _ := e.d.app.snapshot()
	if len(objs) != 1 || objs[0].File.Size != size {
		t.Fatalf("application recorded %+v", objs)
	}
	key := objs[0].File.RemoteID
	head, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &e.cfg.Store.Bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	if *head.ContentLength != size {
		t.Fatalf("stored object has %d bytes, want %d", *head.ContentLength, size)
	}
	t.Logf("5 GiB unknown-length upload: %v (%.0f MiB/s), peak RSS of the test process %.1f MiB",
		elapsed.Round(time.Millisecond), float64(size)/(1<<20)/elapsed.Seconds(), float64(peak)/(1<<20))
	if peak >= 64<<20 {
		t.Fatalf("peak RSS %.1f MiB, want under 64 MiB", float64(peak)/(1<<20))
	}
}

// resetPeakRSS resets the kernel's high-water mark of resident memory
// (VmHWM) for this process (Linux, proc(5) clear_refs).
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS returns VmHWM in bytes.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, io.ErrUnexpectedEOF
}

// BenchmarkUpload1GiB compares, in one run against the same versitygw,
// a 1 GiB upload sent straight to the store with a presigned PUT and the
// same upload through the proxy (known length: one streaming PUT;
// unknown length: multipart with 8 MiB parts).
//
//	go test -run '^$' -bench Upload1GiB -benchtime 1x ./examples/direct-upload
func BenchmarkUpload1GiB(b *testing.B) {
	const size = 1 << 30
	e := newEnv(b, func(c *appConfig) {
		c.PartSize = 8 * mib
		c.SinglePutMax = 5 << 30
		c.MaxSize = 2 << 30
		c.Hashes = []string{"sha256"}
	})
	b.Run("direct-put", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			key := "direct/" + strconv.Itoa(i)
			p, err := e.d.app.presign.PresignPutObject(context.Background(), &s3.PutObjectInput{Bucket: &e.cfg.Store.Bucket, Key: &key})
			if err != nil {
				b.Fatal(err)
			}
			req := mustRequest(http.MethodPut, p.URL, &zeroReader{n: size})
			req.ContentLength = size
			e.do(b, req, http.StatusOK)
		}
	})
	b.Run("direct-multipart", func(b *testing.B) {
		// The store's own multipart speed with the same 8 MiB parts, sent
		// one after the other with the SDK (its Complete copies the parts).
		b.SetBytes(size)
		b.ReportAllocs()
		part := make([]byte, e.cfg.PartSize)
		ctx := context.Background()
		for i := 0; i < b.N; i++ {
			key := "direct-mp/" + strconv.Itoa(i)
			mp, err := e.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &e.cfg.Store.Bucket, Key: &key})
			if err != nil {
				b.Fatal(err)
			}
			var done []types.CompletedPart
			for n := int32(1); int64(n-1)*e.cfg.PartSize < size; n++ {
				out, err := e.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: &e.cfg.Store.Bucket, Key: &key,
					UploadId: mp.UploadId, PartNumber: aws.Int32(n), Body: bytes.NewReader(part)})
				if err != nil {
					b.Fatal(err)
				}
				done = append(done, types.CompletedPart{PartNumber: aws.Int32(n), ETag: out.ETag})
			}
			if _, err := e.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &e.cfg.Store.Bucket,
				Key: &key, UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proxy-put", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			req := mustRequest(http.MethodPut, e.url("/files/put"+strconv.Itoa(i)), &zeroReader{n: size})
			req.ContentLength = size
			e.do(b, req, http.StatusCreated)
		}
	})
	b.Run("proxy-multipart", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			req := mustRequest(http.MethodPut, e.url("/files/mp"+strconv.Itoa(i)), chunked{&zeroReader{n: size}})
			e.do(b, req, http.StatusCreated)
		}
	})
}

func (e *env) do(tb testing.TB, req *http.Request, status int) {
	tb.Helper()
	res, err := e.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != status {
		tb.Fatalf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, res.StatusCode, status, body)
	}
}
