package realserver

import (
	"bufio"
	"net"
	"net/http"
	"testing"
)

func TestRedisAnswersPing(t *testing.T) {
	r := StartRedis(t)
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "+PONG\r\n" {
		t.Fatalf("PING answered %q, want +PONG", line)
	}
}

func TestS3Answers(t *testing.T) {
	s := StartS3(t)
	res, err := http.Get(s.Endpoint + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// Unsigned requests are refused: that the S3 API answered at all is
	// what this checks.
	if res.StatusCode != http.StatusForbidden && res.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET / unsigned: status %d, want 403 or 400", res.StatusCode)
	}
}
