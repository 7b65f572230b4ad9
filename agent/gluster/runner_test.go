package gluster

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestExecRunner(t *testing.T) {
	tests := []struct {
		name       string
		r          ExecRunner
		args       []string
		wantOut    string
		wantErrOut string
		wantCode   int
		wantErr    error
	}{
		{name: "exit code and both streams", args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"},
			wantOut: "out\n", wantErrOut: "err\n", wantCode: 3},
		{name: "success", args: []string{"sh", "-c", "printf '<cliOutput/>'"}, wantOut: "<cliOutput/>"},
		{name: "too much output", r: ExecRunner{MaxOutput: 1000}, args: []string{"sh", "-c", "head -c 100000 /dev/zero"},
			wantCode: -1, wantErr: ErrOutputTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code, err := tc.r.Run(context.Background(), tc.args[0], tc.args[1:]...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d", code, tc.wantCode)
			}
			if tc.wantErr == nil && (string(out) != tc.wantOut || string(errOut) != tc.wantErrOut) {
				t.Errorf("stdout %q stderr %q", out, errOut)
			}
		})
	}
}

func TestExecRunnerNotFound(t *testing.T) {
	_, _, code, err := ExecRunner{}.Run(context.Background(), "/nonexistent/gluster", "--xml")
	if err == nil || code != -1 {
		t.Fatalf("code %d err %v, want an error", code, err)
	}
}

// TestExecRunnerTimeoutKillsGroup checks that a timeout kills the command
// and the processes it started (as gluster starts glfsheal).
func TestExecRunnerTimeoutKillsGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The shell prints its background child's pid, then waits for it.
	out, _, _, err := ExecRunner{WaitDelay: time.Second}.Run(ctx, "sh", "-c", "sleep 60 & echo $!; wait")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned after %s", d)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if perr != nil {
		t.Fatalf("child pid %q: %v", out, perr)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after the timeout", pid)
		}
		<-tick.C
	}
}

// processAlive is true while pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
