// Package upload is what an application behind a sluice proxy needs for
// direct uploads (the proxy's sluice.Upload interceptor): the Plan it
// answers a pre-authorization with, the check that a pre-authorization
// request came from its proxy (VerifyPreauthorize), and the check of the
// signed description of the stored objects that replaces the body
// (Verify). It does not import the proxy.
//
// The flow, for a request the proxy's Upload route captures:
//
//  1. the proxy asks the application where the body may go (usually
//     POST <path>/authorize, without the body, with HeaderPreauthorize);
//     the application checks it with VerifyPreauthorize and answers 200
//     with a Plan as JSON (presigned URLs), or refuses with any other
//     status;
//  2. the proxy streams the body to object storage through the plan's
//     URLs;
//  3. the proxy forwards the request without the body, with
//     HeaderSignature describing the stored objects; the application gets
//     them with Verify.
//
// Both tokens are HS256 JSON Web Tokens (RFC 7519) signed with a key the
// proxy and the application share.
package upload

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sluiceproxy/sluice/internal/hs256"
)

// Header names of direct uploads. Every request header whose name starts
// with "Sluice-", in any case and with underscores for dashes
// ("Sluice_Upload_Signature", which CGI-style upstreams read as the same
// name), is removed from a request the proxy's Upload handles before
// anything else happens, so that only the proxy can set them.
const (
	// HeaderSignature carries the HS256 JWT whose claims (Claims)
	// describe the stored objects. Check it with Verify.
	HeaderSignature = "Sluice-Upload-Signature"
	// HeaderPrefix starts the informational headers describing a
	// raw-body upload: Sluice-Upload-Name, -Size, -Remote-Id,
	// -Remote-Url, -Content-Type, -Md5, -Sha1, -Sha256, -Sha512 and
	// -Duration (seconds). They repeat the signed claims.
	HeaderPrefix = "Sluice-Upload-"
	// HeaderLength is sent in the pre-authorization request: the declared
	// body length, absent when it is unknown (chunked), so that the
	// application can choose between a single PUT and a multipart upload.
	HeaderLength = "Sluice-Upload-Length"
	// HeaderPreauthorize is sent in the pre-authorization request: an
	// HS256 JWT proving that the proxy sent it. Check it with
	// VerifyPreauthorize.
	HeaderPreauthorize = "Sluice-Preauthorize"
)

// Issuer is the "iss" claim of every token the proxy makes.
const Issuer = "sluice"

// ErrSignature is wrapped by the errors of Verify and VerifyPreauthorize:
// the token is missing, malformed, not signed with the key, expired, or
// of the other kind.
var ErrSignature = errors.New("upload: invalid signature")

// Plan is a pre-authorization's answer: where the body goes and under
// which limits. The application sends it as JSON with status 200.
type Plan struct {
	// Objects are the places the body may go: a raw body uses the first,
	// a form's file parts use them in order. At least one.
	Objects []Object `json:"objects"`

	// MaxSize, if positive, bounds each object below the proxy's own
	// limit (sluice.Upload.MaxSize).
	MaxSize int64 `json:"max_size,omitempty"`

	// Hashes, if not nil, replaces the digests the proxy computes for
	// this request (sluice.Upload.Hashes): "md5", "sha1", "sha256",
	// "sha512".
	Hashes []string `json:"hashes,omitempty"`
}

// Object is one object of a Plan: a presigned PUT URL, a presigned
// multipart upload, or both (the PUT is used for a body of known length
// that fits in one part). The URLs must be http or https.
type Object struct {
	// ID names the object for the application (e.g. its key); it is
	// repeated in the description as RemoteID.
	ID string `json:"id"`

	// URL is the object's address given to the application as RemoteURL.
	// If empty, the PUT or complete URL without its query.
	URL string `json:"url,omitempty"`

	// PutURL is a presigned PutObject URL.
	PutURL string `json:"put_url,omitempty"`

	// DeleteURL is a presigned DeleteObject URL, used to remove the
	// object if the request fails after it was stored. If empty, such an
	// object stays.
	DeleteURL string `json:"delete_url,omitempty"`

	// Multipart is a presigned multipart upload, used for bodies of
	// unknown length or larger than one part.
	Multipart *Multipart `json:"multipart,omitempty"`
}

// Multipart is an S3 multipart upload created by the application
// (CreateMultipartUpload) with presigned URLs for UploadPart (one per part,
// part numbers from 1), CompleteMultipartUpload and AbortMultipartUpload.
// Every part but the last has PartSize bytes, so the object can hold at
// most PartSize × len(PartURLs) bytes. S3 wants PartSize ≥ 5 MiB.
type Multipart struct {
	PartSize    int64    `json:"part_size"`
	PartURLs    []string `json:"part_urls"`
	CompleteURL string   `json:"complete_url"`
	AbortURL    string   `json:"abort_url"`
}

// Claims are the claims of the proxy's tokens: the description of the
// stored objects (HeaderSignature) and the pre-authorization token
// (HeaderPreauthorize), which has no Files.
type Claims struct {
	Issuer    string `json:"iss"` // Issuer
	IssuedAt  int64  `json:"iat"` // Unix seconds
	ExpiresAt int64  `json:"exp"` // Unix seconds
	// Method and Path are those of the client's request, so that a token
	// cannot be replayed on another endpoint.
	Method string `json:"method"`
	Path   string `json:"path"`
	// Files describe the stored objects, in the order they were stored.
	Files []File `json:"files,omitempty"`
	// Preauthorize is set in a pre-authorization token, so that it cannot
	// pass for a description (both are signed with the same key).
	Preauthorize bool `json:"preauthorize,omitempty"`
}

// File describes one stored object.
type File struct {
	// Field is the form field of a file part, empty for a raw body.
	Field string `json:"field,omitempty"`
	// Name is the client's file name: the form part's filename, or for a
	// raw body the Content-Disposition filename or the last path segment.
	Name        string `json:"name"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
	RemoteID    string `json:"remote_id"`
	RemoteURL   string `json:"remote_url"`
	MD5         string `json:"md5,omitempty"`
	SHA1        string `json:"sha1,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
	SHA512      string `json:"sha512,omitempty"`
	// Duration is the time spent storing the object, in seconds.
	Duration float64 `json:"upload_duration"`
}

// Verify checks the description the proxy added to r (HeaderSignature)
// with key, and returns its claims. It fails with an error wrapping
// ErrSignature if the header is missing, not signed with key, expired, not
// issued by the proxy, or a pre-authorization token. Applications should
// trust these claims and not the informational headers or form fields,
// and check that Method and Path are those of the request they serve.
func Verify(r *http.Request, key []byte) (*Claims, error) {
	c, err := verify(r.Header.Get(HeaderSignature), key)
	if err != nil {
		return nil, err
	}
	if c.Preauthorize {
		return nil, fmt.Errorf("%w: a pre-authorization token, not an upload description", ErrSignature)
	}
	return c, nil
}

// VerifyPreauthorize checks that r is a pre-authorization request sent by
// the proxy with key (HeaderPreauthorize), so that an application answers
// with presigned URLs only to its proxy. It returns the method and path of
// the upload being authorized.
func VerifyPreauthorize(r *http.Request, key []byte) (method, path string, err error) {
	c, err := verify(r.Header.Get(HeaderPreauthorize), key)
	if err != nil {
		return "", "", err
	}
	if !c.Preauthorize {
		return "", "", fmt.Errorf("%w: not a pre-authorization token", ErrSignature)
	}
	return c.Method, c.Path, nil
}

func verify(tok string, key []byte) (*Claims, error) {
	if tok == "" {
		return nil, fmt.Errorf("%w: missing", ErrSignature)
	}
	c := new(Claims)
	if err := hs256.Verify(key, tok, c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if c.Issuer != Issuer {
		return nil, fmt.Errorf("%w: issuer %q", ErrSignature, c.Issuer)
	}
	if time.Now().Unix() > c.ExpiresAt {
		return nil, fmt.Errorf("%w: expired", ErrSignature)
	}
	return c, nil
}
