package sluice

import (
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// One mechanism strips the headers the proxy owns, whoever owns them
// (Proxy.IdentityHeaders, AuthRequest.AuthResponseHeaders, an Upload's
// "Sluice-*", the forwarding headers): every spelling an upstream reads as
// the same name goes, in any case and with underscores for dashes.
func TestStripOwnedHeaderSpellings(t *testing.T) {
	sent := []string{
		"X-User", "X_User", "x-user", "X-Userx",
		"X-Sluice-Email", "X_SLUICE_EMAIL", "x_sluice-groups",
		"Sluice-Upload-Signature", "Sluice_Upload_Signature", "sluice-upload-name", "SLUICE_PREAUTHORIZE", "Sluice",
		"X-Forwarded-For", "X_Forwarded_For", "x-forwarded-host", "Forwarded", "X-Real-Ip", "X_Real_IP",
		"Accept", "Cookie",
	}
	p := &Proxy{IdentityHeaders: []string{"X-User", "X-Sluice-*"}}
	p.identity = newHeaderNames(p.IdentityHeaders...)
	tests := []struct {
		name  string
		strip func(h http.Header)
		kept  []string
	}{
		{"identity headers", p.identity.strip, []string{
			"X-Userx",
			"Sluice-Upload-Signature", "Sluice_Upload_Signature", "sluice-upload-name", "SLUICE_PREAUTHORIZE", "Sluice",
			"X-Forwarded-For", "X_Forwarded_For", "x-forwarded-host", "Forwarded", "X-Real-Ip", "X_Real_IP",
			"Accept", "Cookie",
		}},
		{"upload headers", uploadHeaders.strip, []string{
			"X-User", "X_User", "x-user", "X-Userx",
			"X-Sluice-Email", "X_SLUICE_EMAIL", "x_sluice-groups",
			"Sluice",
			"X-Forwarded-For", "X_Forwarded_For", "x-forwarded-host", "Forwarded", "X-Real-Ip", "X_Real_IP",
			"Accept", "Cookie",
		}},
		{"forged from an untrusted peer", func(h http.Header) { p.dropForged(h, false) }, []string{
			"X-Userx",
			"Sluice-Upload-Signature", "Sluice_Upload_Signature", "sluice-upload-name", "SLUICE_PREAUTHORIZE", "Sluice",
			"Accept", "Cookie",
		}},
		{"forged from a trusted peer", func(h http.Header) { p.dropForged(h, true) }, []string{
			"X-Userx",
			"Sluice-Upload-Signature", "Sluice_Upload_Signature", "sluice-upload-name", "SLUICE_PREAUTHORIZE", "Sluice",
			"X-Forwarded-For", "Forwarded", "X-Real-Ip",
			"Accept", "Cookie",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, k := range sent {
				h[k] = []string{"v"}
			}
			tt.strip(h)
			var got []string
			for k := range h {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.kept))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDashedName(t *testing.T) {
	for in, want := range map[string]string{
		"X-User":       "X-User",
		"X_User":       "X-User",
		"x-user":       "X-User",
		"x_sluice_via": "X-Sluice-Via",
		"Bad Name":     "Bad Name", // not a token: left alone
	} {
		if got := dashedName(in); got != want {
			t.Errorf("dashedName(%q) = %q, want %q", in, got, want)
		}
	}
}
