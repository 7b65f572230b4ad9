package vmagent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxManagedFile bounds a system file the vmagent reads to edit it
// (/etc/fstab, /etc/cvmfs/default.local).
const maxManagedFile = 1 << 20

// writeFile makes root+path hold content with mode perm. It writes only
// when the content or the mode differs, atomically (a temporary file in the
// same directory, synced, then renamed over the old one), and reports
// whether anything changed.
func writeFile(root, path string, content []byte, perm os.FileMode) (bool, error) {
	full := filepath.Join(root, path)
	if st, err := os.Lstat(full); err == nil && st.Mode().IsRegular() {
		old, err := readLimited(full, int64(len(content))+1)
		if err == nil && bytes.Equal(old, content) {
			if st.Mode().Perm() == perm {
				return false, nil
			}
			if err := os.Chmod(full, perm); err != nil {
				return false, fmt.Errorf("write %s: %w", path, err)
			}
			return true, nil
		}
	}
	dir := filepath.Dir(full)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(full)+".tmp*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	// Mode first, so a secret is never readable by others, not even briefly.
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, full); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return true, nil
}

// readLimited reads a regular file of at most limit bytes; a bigger one is
// an error rather than silently cut.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return b, nil
}

// readManaged reads a system file the vmagent edits; a missing file reads
// as empty.
func readManaged(root, path string) ([]byte, error) {
	b, err := readLimited(filepath.Join(root, path), maxManagedFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// replaceLine returns text with line in place of the first line that
// matches, dropping any later matches, or with line appended when none
// matches. Every line, the last included, ends in a newline.
func replaceLine(text []byte, matches func(string) bool, line string) []byte {
	var out bytes.Buffer
	done := false
	if len(text) > 0 {
		for l := range strings.SplitSeq(strings.TrimSuffix(string(text), "\n"), "\n") {
			if matches(l) {
				if !done {
					out.WriteString(line + "\n")
					done = true
				}
				continue
			}
			out.WriteString(l + "\n")
		}
	}
	if !done {
		out.WriteString(line + "\n")
	}
	return out.Bytes()
}
