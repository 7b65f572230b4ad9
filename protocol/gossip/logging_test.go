package gossip

import (
	"testing"

	"github.com/sirupsen/logrus"
)

func TestParseLogLine(t *testing.T) {
	cases := []struct {
		line  string
		level logrus.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", logrus.DebugLevel, "Stream connection from=127.0.0.1:1"},
		{"[WARN] memberlist: Was able to connect to x but other probes failed", logrus.WarnLevel, "Was able to connect to x but other probes failed"},
		{"[ERR] memberlist: Failed to send ping: write udp: bad", logrus.ErrorLevel, "Failed to send ping: write udp: bad"},
		{"[ERR] memberlist: Failed to send indirect UDP ping: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection",
			logrus.DebugLevel, "Failed to send indirect UDP ping: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection"},
		{"no prefix at all", logrus.InfoLevel, "no prefix at all"},
		{"[BOGUS] memberlist: x", logrus.InfoLevel, "[BOGUS] memberlist: x"},
	}
	for _, tc := range cases {
		level, msg := parseLogLine(tc.line)
		if level != tc.level || msg != tc.msg {
			t.Errorf("parseLogLine(%q) = %v %q, want %v %q", tc.line, level, msg, tc.level, tc.msg)
		}
	}
}
