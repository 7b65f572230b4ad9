package gossip

import (
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

// newStdLogger returns a *log.Logger for memberlist whose lines go to l at
// the level named by memberlist's prefix ([DEBUG], [INFO], [WARN], [ERR]).
func newStdLogger(l *logrus.Entry) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

// logWriter turns memberlist's log lines into logrus entries.
type logWriter struct{ log *logrus.Entry }

func (w logWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		level, msg := parseLogLine(line)
		if w.log.Logger.IsLevelEnabled(level) {
			w.log.Log(level, msg)
		}
	}
	return len(p), nil
}

// parseLogLine splits "[WARN] memberlist: text" into a level and "text".
// Lines without a known prefix are logged at info level.
func parseLogLine(line string) (logrus.Level, string) {
	level := logrus.InfoLevel
	rest := strings.TrimSpace(line)
	if strings.HasPrefix(rest, "[") {
		if end := strings.IndexByte(rest, ']'); end > 0 {
			if l, ok := levels[rest[1:end]]; ok {
				level = l
				rest = strings.TrimSpace(rest[end+1:])
			}
		}
	}
	rest = strings.TrimPrefix(rest, "memberlist: ")
	// Probes in flight when the pool shuts down fail on the closed socket:
	// expected at every stop, not an error worth an operator's attention.
	if level <= logrus.WarnLevel && strings.Contains(rest, "use of closed network connection") {
		level = logrus.DebugLevel
	}
	return level, rest
}

var levels = map[string]logrus.Level{
	"TRACE": logrus.TraceLevel,
	"DEBUG": logrus.DebugLevel,
	"INFO":  logrus.InfoLevel,
	"WARN":  logrus.WarnLevel,
	"ERR":   logrus.ErrorLevel,
	"ERROR": logrus.ErrorLevel,
}
