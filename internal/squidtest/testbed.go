package squidtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Instance is one squid of the test bed (deploy/testbed/squid).
type Instance struct {
	Port int
	PID  int
	// Started says whether the Up call that returned it started it.
	Started bool
	// Dir holds squid.conf, cache/ and logs/ (access.log, cache.log).
	Dir string
}

// Addr is the instance's proxy address.
func (i Instance) Addr() string { return "127.0.0.1:" + strconv.Itoa(i.Port) }

// AccessLog reads the instance's access log.
func (i Instance) AccessLog() (string, error) {
	b, err := os.ReadFile(filepath.Join(i.Dir, "logs", "access.log"))
	return string(b), err
}

// Testbed runs the project's squid test bed scripts for one test package.
type Testbed struct {
	// Base is the directory holding the instances (SQUID_BASE); each test
	// package uses its own so that packages can run in parallel.
	Base string
}

// ScriptDir finds deploy/testbed/squid from the working directory (a test
// runs in its package's directory) by walking up to the module root.
func ScriptDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 20 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "deploy", "testbed", "squid"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("module root (go.mod) not found above the working directory")
}

// WriteExtraConf gives the instance on port extra squid.conf lines, used
// the next time Up starts it.
func (tb Testbed) WriteExtraConf(port int, conf string) error {
	dir := filepath.Join(tb.Base, strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "extra.conf"), []byte(conf), 0o644)
}

// Up starts the instances on ports (up.sh; idempotent). On failure it
// still returns the instances that came up, so that the caller can stop
// the ones it started.
func (tb Testbed) Up(ports ...int) (map[int]Instance, error) {
	out, err := tb.run("up.sh", ports)
	inst, perr := parseUp(out)
	return inst, errors.Join(err, perr)
}

// Down stops the instances on ports (down.sh), by their recorded PIDs.
func (tb Testbed) Down(ports ...int) error {
	_, err := tb.run("down.sh", ports)
	return err
}

func (tb Testbed) run(script string, ports []int) ([]byte, error) {
	dir, err := ScriptDir()
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, len(ports))
	for _, p := range ports {
		args = append(args, strconv.Itoa(p))
	}
	cmd := exec.Command(filepath.Join(dir, script), args...)
	cmd.Env = append(os.Environ(), "SQUID_BASE="+tb.Base)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %v: %w\n%s", script, args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// parseUp reads up.sh's "SQUID PORT=.. PID=.. STARTED=.. DIR=.." lines.
func parseUp(out []byte) (map[int]Instance, error) {
	res := map[int]Instance{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "SQUID ")
		if !ok {
			continue
		}
		var in Instance
		for f := range strings.FieldsSeq(rest) {
			k, v, _ := strings.Cut(f, "=")
			var err error
			switch k {
			case "PORT":
				in.Port, err = strconv.Atoi(v)
			case "PID":
				in.PID, err = strconv.Atoi(v)
			case "STARTED":
				in.Started = v == "1"
			case "DIR":
				in.Dir = v
			}
			if err != nil {
				return nil, fmt.Errorf("up.sh line %q: %w", sc.Text(), err)
			}
		}
		if in.Port == 0 || in.PID == 0 || in.Dir == "" {
			return nil, fmt.Errorf("up.sh line %q lacks PORT, PID or DIR", sc.Text())
		}
		res[in.Port] = in
	}
	return res, nil
}
