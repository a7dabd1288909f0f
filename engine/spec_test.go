package engine

import (
	"strings"
	"testing"
)

func TestParsePort(t *testing.T) {
	good := map[string]Port{
		"8888":                {HostIP: "127.0.0.1", ContainerPort: "8888", Proto: "tcp"},
		"9000:8888":           {HostIP: "127.0.0.1", HostPort: "9000", ContainerPort: "8888", Proto: "tcp"},
		"127.0.0.1:53:53/udp": {HostIP: "127.0.0.1", HostPort: "53", ContainerPort: "53", Proto: "udp"},
		":80":                 {HostIP: "127.0.0.1", ContainerPort: "80", Proto: "tcp"},
	}
	for s, want := range good {
		if got, err := ParsePort(s, "127.0.0.1"); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v", s, got, err)
		}
	}
	bad := map[string]string{":": "is not a port number", "8888:": "is not a port number", "0": "is not a port number",
		"70000": "is not a port number", "x:80": "is not a port number", "80/sctp": "tcp or udp",
		"0.0.0.0:80:80": "only be published on 127.0.0.1", "1:2:3:4": "use [HOSTPORT:]CONTAINERPORT"}
	for s, want := range bad {
		if _, err := ParsePort(s, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePort(%q): %v, want %q", s, err, want)
		}
	}
}
