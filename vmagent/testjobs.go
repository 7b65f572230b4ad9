package vmagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// TestJobsFile is a job count read from a file, for local test VMs only
// (vmagent --test-jobs-file): they run no HTCondor, and tests make them
// "busy" by writing "RUNNING CLAIMED" (two whole numbers) into the file
// under the VM's root. A missing or unreadable file is an unknown count.
// Never use it in a real VM: the count must come from HTCondor.
type TestJobsFile struct {
	Root string
	Path string
}

// Count implements Options.Jobs.
func (f TestJobsFile) Count(context.Context) *vmproto.JobCount {
	b, err := os.ReadFile(filepath.Join(f.Root, f.Path))
	if err != nil {
		return nil
	}
	var c vmproto.JobCount
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &c.Running, &c.Claimed); err != nil {
		return nil
	}
	c.At = time.Now().UTC()
	return &c
}
