package main

import (
	"strings"
	"testing"
)

// TestImageCLI wants, lists and unwants an image on a running hub through
// its admin socket.
func TestImageCLI(t *testing.T) {
	_, cfgPath, _, h := runningHub(t)
	hash := "sha512:" + strings.Repeat("ab", 64)
	cases := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"want", []string{"image", "want", "--hash", hash, "worker-el9", "west", "--config", cfgPath}, []string{"want: worker-el9 in west"}, ""},
		{"want without hash", []string{"image", "want", "worker-el9", "west", "--config", cfgPath}, nil, "needs --hash"},
		{"want bad hash", []string{"image", "want", "--hash", "sha512:xyz", "worker-el9", "west", "--config", cfgPath}, nil, "3 hex digits"},
		{"want other contents", []string{"image", "want", "--hash", "md5:" + strings.Repeat("0", 32), "worker-el9", "west", "--config", cfgPath}, nil, "already wanted with sha512"},
		{"ls", []string{"image", "ls", "--config", cfgPath}, []string{"IMAGE", "worker-el9", "sha512:abababababab", "api", "west"}, ""},
		{"status", []string{"image", "status", "--config", cfgPath}, []string{"COPY", "IMAGE", "ETA"}, ""},
		{"unwant", []string{"image", "unwant", "worker-el9", "west", "--config", cfgPath}, []string{"unwant: worker-el9 in west"}, ""},
		{"unwant again", []string{"image", "unwant", "worker-el9", "--config", cfgPath}, nil, "not wanted through the API"},
		{"unknown", []string{"image", "copy", "--config", cfgPath}, nil, "unknown image command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := cli(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if len(h.Images().Wants) != 0 {
		t.Errorf("wants after unwant: %+v", h.Images().Wants)
	}
}
