package gossip

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestMemberlistLogsGoToLogrus(t *testing.T) {
	tests := []struct {
		line  string
		level logrus.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000", logrus.DebugLevel, "Stream connection from=127.0.0.1:5000"},
		{"[INFO] memberlist: Marking vm-1 as failed, suspect timeout reached (2 peer confirmations)", logrus.InfoLevel, "Marking vm-1 as failed, suspect timeout reached (2 peer confirmations)"},
		{"[WARN] memberlist: Refuting a suspect message (from: vm-2)", logrus.WarnLevel, "Refuting a suspect message (from: vm-2)"},
		{"[ERR] memberlist: Failed to send UDP ping: closed", logrus.ErrorLevel, "Failed to send UDP ping: closed"},
		{"[ERROR] memberlist: boom", logrus.ErrorLevel, "boom"},
		{"[TRACE] memberlist: detail", logrus.TraceLevel, "detail"},
		{"no prefix at all", logrus.InfoLevel, "no prefix at all"},
		{"[CUSTOM] memberlist: odd", logrus.InfoLevel, "[CUSTOM] memberlist: odd"},
		{"[", logrus.InfoLevel, "["},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			l, hook := test.NewNullLogger()
			l.SetLevel(logrus.TraceLevel)
			std := newStdLogger(logrus.NewEntry(l).WithField("component", "gossip"))
			std.Print(tt.line)
			e := hook.LastEntry()
			if e == nil {
				t.Fatal("nothing logged")
			}
			if e.Level != tt.level || e.Message != tt.msg || e.Data["component"] != "gossip" {
				t.Fatalf("logged %s %q %v, want %s %q", e.Level, e.Message, e.Data, tt.level, tt.msg)
			}
		})
	}
}

func TestMemberlistDebugSkippedAtInfo(t *testing.T) {
	l, hook := test.NewNullLogger()
	l.SetLevel(logrus.InfoLevel)
	newStdLogger(logrus.NewEntry(l)).Print("[DEBUG] memberlist: chatter")
	if n := len(hook.AllEntries()); n != 0 {
		t.Fatalf("%d entries logged", n)
	}
}
