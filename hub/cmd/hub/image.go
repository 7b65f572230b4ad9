package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/canopy-grid/canopy/hub"
)

// runImage serves `hub image want|unwant|ls|status` through the running
// hub's API (the admin socket or admin TLS listener, like every operator
// command; ls and status also work on the read-only HTTP listener).
func runImage(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: image needs want, unwant, ls or status", errUsage)
	}
	fs := flag.NewFlagSet("hub image "+args[0], flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	hash := fs.String("hash", "", "want: the image's digest, algo:hex (sha512 as Glance's os_hash_value)")
	// Flags may come before, between or after the image and sites.
	var rest []string
	for left := args[1:]; ; {
		if err := fs.Parse(left); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		left = fs.Args()[1:]
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	switch args[0] {
	case "want", "unwant":
		if len(rest) < 2 && args[0] == "want" || len(rest) < 1 {
			return fmt.Errorf("%w: hub image %s [--hash algo:hex] IMAGE SITE (one or more)", errUsage, args[0])
		}
		if args[0] == "want" && *hash == "" {
			return fmt.Errorf("%w: hub image want needs --hash algo:hex", errUsage)
		}
		body, _ := json.Marshal(hub.ImageWantRequest{Name: rest[0], Hash: *hash, Sites: rest[1:]})
		if err := c.post("/api/v1/images/"+args[0], body); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "%s: %s in %s\n", args[0], rest[0], strings.Join(rest[1:], " "))
		return err
	case "ls", "status":
		var st hub.ImageStatus
		if err := c.do(http.MethodGet, "/api/v1/images", &st); err != nil {
			return err
		}
		if args[0] == "ls" {
			return printMatrix(stdout, st)
		}
		return printTransfers(stdout, st)
	}
	return fmt.Errorf("%w: unknown image command %q", errUsage, args[0])
}

// post sends a JSON body to the hub's API.
func (c *client) post(path string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the hub: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("hub: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// printMatrix prints the desired matrix (a row per image, a column per
// site, each cell's state) and the conflicts.
func printMatrix(w io.Writer, st hub.ImageStatus) error {
	sites := map[string]bool{}
	for s := range st.Sites {
		sites[s] = true
	}
	cells := map[string]string{}
	for _, c := range st.Cells {
		sites[c.Site] = true
		cells[c.Ref.Name+"|"+c.Site] = string(c.State)
	}
	cols := slices.Sorted(maps.Keys(sites))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "IMAGE\tHASH\tFROM\t%s\n", strings.Join(cols, "\t"))
	for _, want := range st.Wants {
		row := []string{want.Ref.Name, want.Ref.Algo + ":" + want.Ref.Hex[:min(12, len(want.Ref.Hex))], want.From}
		for _, s := range cols {
			v := cells[want.Ref.Name+"|"+s]
			if v == "" {
				v = "-"
			}
			row = append(row, v)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range st.Cells {
		if c.Reason != "" && c.State != "present" {
			fmt.Fprintf(w, "  %s@%s %s: %s\n", c.Ref.Name, c.Site, c.State, c.Reason)
		}
	}
	if len(st.Conflicts) > 0 {
		fmt.Fprintln(w, "conflicts (shown, never fixed by Canopy):")
		for _, c := range st.Conflicts {
			fmt.Fprintf(w, "  %s: %s [%s]\n", c.Kind, c.Detail, strings.Join(c.Where, " "))
		}
	}
	for _, k := range st.Kept {
		fmt.Fprintf(w, "kept %s:%s (%s): %s\n", k.Site, k.Image.ID, k.Image.Name, k.Reason)
	}
	return nil
}

// printTransfers prints the copies under way with their progress.
func printTransfers(w io.Writer, st hub.ImageStatus) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "COPY\tIMAGE\tFROM\tTO\tSTATE\tTRY\tDONE\tRATE\tETA")
	for _, t := range st.Transfers {
		pct := 0.0
		if t.Total > 0 {
			pct = 100 * float64(t.Bytes) / float64(t.Total)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.1f%% of %d MiB\t%.1f MB/s\t%s\n", t.ID, t.Ref.Name, t.Source, t.Dest, t.State,
			t.Attempt, pct, t.Total>>20, t.RateBps/1e6, t.ETA)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for k, f := range st.Failures {
		fmt.Fprintf(w, "failing %s: %d in a row, last %s: %s\n", k, f.Count, f.LastAt.Format(time.RFC3339), f.Error)
	}
	return nil
}
