package balance

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// testUpstreams returns n targets t00, t01, ... with the given weights
// (1 when weights is shorter than n).
func testUpstreams(n int, weights ...int) []*Upstream {
	ts := make([]*Upstream, n)
	for i := range ts {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		host := fmt.Sprintf("10.0.0.%d:80", i)
		ts[i] = &Upstream{id: fmt.Sprintf("t%02d", i), url: &url.URL{Scheme: "http", Host: host}, host: host, weight: w, member: true, hostState: new(hostState)}
	}
	return ts
}

// picks returns the IDs of n picks by pk for one request (see
// withRequest).
func picks(t *testing.T, pk Picker, h http.Header, remote string, n int) []string {
	t.Helper()
	var ids []string
	withRequest(t, h, remote, func(pr *sluice.ProxyRequest) {
		for range n {
			ids = append(ids, pk.Pick(pr).id)
		}
	})
	return ids
}

// countPicks counts n picks by pk for one request, by target ID.
func countPicks(t *testing.T, pk Picker, h http.Header, remote string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, id := range picks(t, pk, h, remote, n) {
		got[id]++
	}
	return got
}

func TestRoundRobinDistribution(t *testing.T) {
	ts := testUpstreams(4)
	pk := RoundRobin().Picker(ts)
	seq := picks(t, pk, nil, "", 8)
	want := []string{"t00", "t01", "t02", "t03", "t00", "t01", "t02", "t03"}
	if diff := cmp.Diff(want, seq); diff != "" {
		t.Errorf("round-robin sequence (-want +got):\n%s", diff)
	}
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	tests := []struct {
		weights []int
		want    string // one full cycle
	}{
		// nginx's documented example: {5, 1, 1} gives a a b a c a a.
		{[]int{5, 1, 1}, "t00 t00 t01 t00 t02 t00 t00"},
		{[]int{1, 1, 1}, "t00 t01 t02"},
		{[]int{2, 4}, "t01 t00 t01"}, // reduced by the gcd
		{[]int{3, 2}, "t00 t01 t00 t01 t00"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			ts := testUpstreams(len(tt.weights), tt.weights...)
			pk := WeightedRoundRobin().Picker(ts)
			n := len(strings.Fields(tt.want))
			seq := picks(t, pk, nil, "", 2*n)
			want := strings.Fields(tt.want + " " + tt.want)
			if diff := cmp.Diff(want, seq); diff != "" {
				t.Errorf("sequence (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWeightedRoundRobinLargeWeights(t *testing.T) {
	// 100 targets of weights up to MaxWeight sum to more than the
	// schedule holds: shares are scaled but stay proportional.
	weights := make([]int, 100)
	for i := range weights {
		weights[i] = 1 + i*10
	}
	ts := testUpstreams(100, weights...)
	pk := WeightedRoundRobin().Picker(ts).(*rrPicker)
	if len(pk.targets) > maxSchedule {
		t.Fatalf("schedule has %d entries, want <= %d", len(pk.targets), maxSchedule)
	}
	got := map[string]int{}
	for _, u := range pk.targets {
		got[u.id]++
	}
	// The heaviest target (991) gets about 991/(sum) of the schedule and
	// each target at least one slot.
	for _, u := range ts {
		if got[u.id] == 0 {
			t.Errorf("%s (weight %d) has no slot", u.id, u.weight)
		}
	}
	ratio := float64(got["t99"]) / float64(got["t09"]) // 991 / 91
	if ratio < 10 || ratio > 11.8 {
		t.Errorf("t99/t09 share ratio = %.2f, want about %.2f", ratio, 991.0/91)
	}
}

func TestLeastConnections(t *testing.T) {
	ts := testUpstreams(4, 1, 1, 1, 2)
	pk := LeastConnections().Picker(ts)
	ts[0].inflight.Store(3)
	ts[1].inflight.Store(1)
	ts[2].inflight.Store(2)
	ts[3].inflight.Store(4) // weight 2: load 2
	if diff := cmp.Diff(strings.Fields("t01 t01 t01 t01 t01 t01 t01 t01"), picks(t, pk, nil, "", 8)); diff != "" {
		t.Fatalf("picks (-want t01, fewest in flight, +got):\n%s", diff)
	}
	// Idle targets share the load in turn.
	for _, u := range ts {
		u.inflight.Store(0)
	}
	got := countPicks(t, pk, nil, "", 400)
	if diff := cmp.Diff(map[string]int{"t00": 100, "t01": 100, "t02": 100, "t03": 100}, got); diff != "" {
		t.Errorf("idle picks (-want +got):\n%s", diff)
	}
	// Simulated load: each pick holds a connection; the weighted target
	// ends up with twice the connections of the others.
	withRequest(t, nil, "", func(pr *sluice.ProxyRequest) {
		for range 50 {
			pk.Pick(pr).inflight.Add(1)
		}
	})
	var loads []int64
	for _, u := range ts {
		loads = append(loads, u.inflight.Load())
	}
	if diff := cmp.Diff([]int64{10, 10, 10, 20}, loads); diff != "" {
		t.Errorf("in flight after 50 held picks (-want +got):\n%s", diff)
	}
}

func TestRandomTwoChoices(t *testing.T) {
	ts := testUpstreams(5)
	pk := RandomTwoChoices().Picker(ts)
	// The most loaded target is never chosen: it always loses its duel.
	for i, u := range ts {
		u.inflight.Store(int64(i))
	}
	got := countPicks(t, pk, nil, "", 5000)
	if got["t04"] != 0 {
		t.Errorf("most loaded target picked %d times", got["t04"])
	}
	if got["t00"] <= got["t03"] {
		t.Errorf("least loaded picked %d times, less than a loaded one (%d)", got["t00"], got["t03"])
	}
	// Idle targets share the load (expected 2000 each; the bound is many
	// standard deviations wide).
	for _, u := range ts {
		u.inflight.Store(0)
	}
	got = countPicks(t, pk, nil, "", 10000)
	for _, u := range ts {
		if n := got[u.id]; n < 1500 || n > 2500 {
			t.Errorf("%s picked %d times of 10000, want about 2000", u.id, n)
		}
	}
	if one := picks(t, RandomTwoChoices().Picker(ts[:1]), nil, "", 1); one[0] != ts[0].id {
		t.Errorf("single target: picked %v", one)
	}
}

// assignments returns the targets pk picks for requests with X-User
// user-0, user-1, ... up to keys.
func assignments(t *testing.T, pk Picker, keys int) []string {
	t.Helper()
	out := make([]string, keys)
	withRequest(t, http.Header{"X-User": {""}}, "", func(pr *sluice.ProxyRequest) {
		for i := range out {
			pr.In.Header["X-User"][0] = "user-" + strconv.Itoa(i)
			out[i] = pk.Pick(pr).id
		}
	})
	return out
}

func TestConsistentHashDistribution(t *testing.T) {
	ts := testUpstreams(10)
	pk := ConsistentHash(HashHeader("x-user")).Picker(ts)
	got := map[string]int{}
	for _, id := range assignments(t, pk, 20000) {
		got[id]++
	}
	for _, u := range ts {
		// 2000 expected; 160 virtual nodes keep shares within ~25%.
		if n := got[u.id]; n < 1400 || n > 2600 {
			t.Errorf("%s got %d of 20000 keys, want about 2000", u.id, n)
		}
	}
	// Same key, same target, across pickers built independently (other
	// proxy instances).
	other := ConsistentHash(HashHeader("X-User")).Picker(testUpstreams(10))
	if diff := cmp.Diff(assignments(t, pk, 1000), assignments(t, other, 1000)); diff != "" {
		t.Errorf("two instances disagree (-a +b):\n%s", diff)
	}
}

func TestConsistentHashRemappingBound(t *testing.T) {
	const keys = 20000
	ts := testUpstreams(11)
	policy := ConsistentHash(HashHeader("X-User"))
	before := assignments(t, policy.Picker(ts[:10]), keys)

	t.Run("remove", func(t *testing.T) {
		// Removing t03: exactly the keys it served move.
		rest := append(append([]*Upstream{}, ts[:3]...), ts[4:10]...)
		after := assignments(t, policy.Picker(rest), keys)
		for i := range keys {
			if (before[i] != after[i]) != (before[i] == "t03") {
				t.Fatalf("key %d moved %s -> %s", i, before[i], after[i])
			}
		}
	})
	t.Run("add", func(t *testing.T) {
		// Adding t10: moved keys all go to it, about 1/11 of them.
		after := assignments(t, policy.Picker(ts), keys)
		moved := 0
		for i := range keys {
			if before[i] != after[i] {
				moved++
				if after[i] != "t10" {
					t.Fatalf("key %d moved %s -> %s, not to the new target", i, before[i], after[i])
				}
			}
		}
		if bound := 2 * keys / 11; moved == 0 || moved > bound {
			t.Errorf("%d keys moved, want between 1 and %d (fair share %d)", moved, bound, keys/11)
		}
	})
}

func TestConsistentHashKeys(t *testing.T) {
	ts := testUpstreams(8)
	type request struct {
		h      http.Header
		remote string
	}
	tests := []struct {
		name string
		key  HashKey
		a, b request  // same key
		c    *request // no key
	}{
		{"client ip", HashClientIP(),
			request{nil, "192.0.2.7:1000"}, request{nil, "192.0.2.7:2000"}, nil},
		{"cookie", HashCookie("sid"),
			request{http.Header{"Cookie": {"a=1; sid=abc"}}, ""},
			request{http.Header{"Cookie": {`sid="abc"`}}, ""},
			&request{http.Header{"Cookie": {"sidx=abc"}}, ""}},
		{"header", HashHeader("X-Tenant"),
			request{http.Header{"X-Tenant": {"acme"}}, "192.0.2.1:1"},
			request{http.Header{"X-Tenant": {"acme"}}, "192.0.2.2:1"},
			&request{nil, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := ConsistentHash(tt.key).Picker(ts)
			a := picks(t, pk, tt.a.h, tt.a.remote, 20)
			b := picks(t, pk, tt.b.h, tt.b.remote, 20)
			want := slices.Repeat([]string{a[0]}, 20)
			if diff := cmp.Diff(want, a); diff != "" {
				t.Errorf("one key, several targets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, b); diff != "" {
				t.Errorf("the same key in another request, other targets (-want +got):\n%s", diff)
			}
			if tt.c == nil {
				return
			}
			// Without a key: round-robin over all targets.
			got := countPicks(t, pk, tt.c.h, tt.c.remote, 16)
			if len(got) != len(ts) {
				t.Errorf("keyless picks %v, want every target twice", got)
			}
		})
	}
}

func TestStickyCookie(t *testing.T) {
	ts := testUpstreams(3)
	policy := StickyCookie("lb", nil)
	pk := policy.Picker(ts)

	// pick picks with pk for a request with header h, and returns the
	// target and the cookies set.
	pick := func(pk Picker, h http.Header) (u *Upstream, set []string) {
		withRequest(t, h, "", func(pr *sluice.ProxyRequest) {
			u = pk.Pick(pr)
			set = slices.Clone(pr.ResponseHeader()["Set-Cookie"])
		})
		return u, set
	}
	u, set := pick(pk, nil)
	if len(set) != 1 || !strings.HasPrefix(set[0], "lb=") || !strings.Contains(set[0], "HttpOnly") {
		t.Fatalf("Set-Cookie = %q", set)
	}
	cookie, _, _ := strings.Cut(set[0], ";")
	for range 10 {
		got, again := pick(pk, http.Header{"Cookie": {cookie}})
		if got != u {
			t.Fatalf("sticky request went to %s, want %s", got.id, u.id)
		}
		if again != nil {
			t.Fatalf("cookie set again: %q", again)
		}
	}
	if strings.Contains(cookie, u.host) || strings.Contains(cookie, u.id) {
		t.Errorf("cookie %q reveals the target", cookie)
	}

	// The target leaves: the request is placed again and re-cookied.
	var rest []*Upstream
	for _, x := range ts {
		if x != u {
			rest = append(rest, x)
		}
	}
	got, c := pick(policy.Picker(rest), http.Header{"Cookie": {cookie}})
	if got == u {
		t.Fatal("request sent to a target that left")
	}
	if len(c) != 1 || strings.HasPrefix(c[0], cookie+";") {
		t.Errorf("Set-Cookie after move = %q, want a new cookie", c)
	}
}

// TestStickyCookieRetry: a request placed on a target that fails is
// retried on another, and the client gets the cookie of the target that
// answered, once: the retry replaces the cookie of the failed attempt.
func TestStickyCookieRetry(t *testing.T) {
	leaktest.Check(t)
	live := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "live") })
	pool := &Pool{Logger: quiet(), Policy: StickyCookie("lb", nil)}
	mustAdd(t, pool, "a-dead", "http://"+deadAddr(t)) // first in turn
	mustAdd(t, pool, "b-live", live.URL)
	px := poolServer(t, pool, func(p *sluice.Proxy) { p.Retry = &sluice.RetryPolicy{Attempts: 2} })
	c := client(t)
	get := func(cookie string) (int, string, []string) {
		req, _ := http.NewRequest("GET", px+"/", nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header["Set-Cookie"]
	}
	status, body, set := get("")
	if status != 200 || body != "live" || len(set) != 1 {
		t.Fatalf("%d %q, Set-Cookie %q: want 200 from the live target and one cookie", status, body, set)
	}
	if n := statsOf(pool, "a-dead").Requests; n != 1 {
		t.Fatalf("the dead target got %d attempts, want 1 (the test needs a retry)", n)
	}
	cookie, _, _ := strings.Cut(set[0], ";")
	for range 3 {
		if status, body, again := get(cookie); status != 200 || body != "live" || again != nil {
			t.Fatalf("with the cookie: %d %q, Set-Cookie %q: want the live target, no new cookie", status, body, again)
		}
	}
	if n := statsOf(pool, "a-dead").Requests; n != 1 {
		t.Errorf("the dead target got %d attempts, want still 1", n)
	}
}

func TestCookieValue(t *testing.T) {
	tests := []struct {
		header []string
		want   string
	}{
		{[]string{"a=1; b=2"}, "2"},
		{[]string{"a=1", "b=3"}, "3"},
		{[]string{`b="q"`}, "q"},
		{[]string{"bb=1; b"}, ""},
		{[]string{" b=4 ;b=5"}, "4"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := cookieValue(http.Header{"Cookie": tt.header}, "b"); got != tt.want {
			t.Errorf("cookieValue(%q) = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func FuzzCookieValue(f *testing.F) {
	f.Add("a=1; b=2", "b")
	f.Add(`b="x"`, "b")
	f.Add(";;=;b", "b")
	f.Fuzz(func(t *testing.T, line, name string) {
		v := cookieValue(http.Header{"Cookie": {line}}, name)
		if !strings.Contains(line, v) {
			t.Fatalf("value %q not in %q", v, line)
		}
	})
}
