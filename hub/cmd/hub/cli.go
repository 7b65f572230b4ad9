package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/ledger"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// client talks to a running hub's API: through its admin socket on the
// hub's host, or its admin TLS listener with an admin certificate.
type client struct {
	base string
	http *http.Client
}

// clientFlags are the flags every operator command takes.
type clientFlags struct {
	cfgPath, target, cert, key, ca string
}

func (cf *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&cf.cfgPath, "config", "/etc/canopy/hub.yaml", "the hub's config (to find its admin socket)")
	fs.StringVar(&cf.target, "hub", os.Getenv("CANOPY_HUB"), "the hub: unix:PATH (its admin socket) or https://HOST:PORT (its admin listener; "+
		"needs --cert, --key, --ca); default: the admin socket the config names ($CANOPY_HUB)")
	fs.StringVar(&cf.cert, "cert", os.Getenv("CANOPY_ADMIN_CERT"), "admin certificate (hub tls issue-admin) for https ($CANOPY_ADMIN_CERT)")
	fs.StringVar(&cf.key, "key", os.Getenv("CANOPY_ADMIN_KEY"), "its key ($CANOPY_ADMIN_KEY)")
	fs.StringVar(&cf.ca, "ca", os.Getenv("CANOPY_CA"), "the hub's CA certificate for https ($CANOPY_CA)")
}

// dial builds the client the flags describe.
func (cf *clientFlags) dial() (*client, error) {
	target := cf.target
	if target == "" {
		sock, err := adminSocket(cf.cfgPath)
		if err != nil {
			return nil, err
		}
		target = "unix:" + sock
	}
	switch {
	case strings.HasPrefix(target, "unix:"):
		path := strings.TrimPrefix(target, "unix:")
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return &client{base: "http://hub", http: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
	case strings.HasPrefix(target, "https://"):
		if cf.cert == "" || cf.key == "" || cf.ca == "" {
			return nil, fmt.Errorf("%w: --hub https://... needs --cert, --key and --ca", errUsage)
		}
		cert, err := tls.LoadX509KeyPair(cf.cert, cf.key)
		if err != nil {
			return nil, fmt.Errorf("admin certificate: %w", err)
		}
		roots, err := caPool(cf.ca)
		if err != nil {
			return nil, err
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert}}}
		return &client{base: strings.TrimSuffix(target, "/"), http: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
	case strings.HasPrefix(target, "http://"):
		// The read-only HTTP listener (or a demo hub with admin_on_http).
		return &client{base: strings.TrimSuffix(target, "/"), http: &http.Client{Timeout: time.Minute}}, nil
	}
	return nil, fmt.Errorf("%w: --hub %q: want unix:PATH, https://HOST:PORT or http://HOST:PORT", errUsage, target)
}

// adminSocket finds the admin socket a hub config names (admin_socket,
// else hub.sock next to state_file). Only those two keys are read: the
// rest of the file may be mid-edit (hub reload is how it gets checked).
func adminSocket(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("find the hub's admin socket (give --hub): %w", err)
	}
	var c struct {
		AdminSocket string `yaml:"admin_socket"`
		StateFile   string `yaml:"state_file"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("find the hub's admin socket in %s (give --hub): %w", path, err)
	}
	if c.AdminSocket == "" && c.StateFile != "" {
		c.AdminSocket = filepath.Join(filepath.Dir(c.StateFile), "hub.sock")
	}
	if c.AdminSocket == "" {
		return "", fmt.Errorf("%s names neither admin_socket nor state_file: give --hub", path)
	}
	return c.AdminSocket, nil
}

func caPool(path string) (*x509.CertPool, error) {
	c, err := pki.LoadCert(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p, nil
}

// do sends a request and decodes a JSON answer into out (unless nil); a
// non-2xx answer is an error carrying the hub's message.
func (c *client) do(method, path string, out any) error {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the hub: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("read the hub's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("hub: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("hub answer to %s: %w", path, err)
	}
	return nil
}

// operator runs the commands that talk to a running hub.
func operator(cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hub "+cmd, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	output := fs.String("o", "table", "output: table or json (accounting: csv too)")
	site := fs.String("site", "", "vm ls, events: only this site")
	state := fs.String("state", "", "vm ls: only VMs in this state ("+strings.Join(hub.DisplayStates, ", ")+")")
	kind := fs.String("kind", "", "events: only this kind")
	limit := fs.Int("limit", 50, "events: at most this many")
	from := fs.String("from", "", "accounting: first day, YYYY-MM-DD")
	to := fs.String("to", "", "accounting: last day, YYYY-MM-DD")
	by := fs.String("by", "group,cloud", "accounting: sum by these of day, group, cloud")
	// Subcommand words come first (hub cloud pause west), flags after.
	var words []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		words, args = append(words, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	words = append(words, fs.Args()...)
	if *output != "table" && *output != "json" && !(cmd == "accounting" && *output == "csv") {
		return fmt.Errorf("%w: -o %q: want table or json", errUsage, *output)
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	switch cmd {
	case "status":
		return cmdStatus(c, *output, stdout)
	case "site", "cloud": // "hub cloud" is another name for it
		if len(words) != 2 || !slices.Contains([]string{hub.ActionPause, hub.ActionResume, hub.ActionDisable, hub.ActionDrain}, words[0]) {
			return fmt.Errorf("%w: hub site pause|resume|disable|drain NAME", errUsage)
		}
		if err := c.do("POST", "/api/v1/sites/"+url.PathEscape(words[1])+"/"+words[0], nil); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "%s: %s done\n", words[1], words[0])
		return err
	case "vm":
		if len(words) == 1 && words[0] == "ls" {
			return cmdVMs(c, *site, *state, *output, stdout)
		}
		if len(words) != 2 || !slices.Contains([]string{"hold", "release", "retire"}, words[0]) {
			return fmt.Errorf("%w: hub vm ls | hub vm hold|release|retire ID", errUsage)
		}
		if err := c.do("POST", "/api/v1/vms/"+url.PathEscape(words[1])+"/"+words[0], nil); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "%s: %s done\n", words[1], words[0])
		return err
	case "events":
		return cmdEvents(c, *kind, *site, *limit, *output, stdout)
	case "accounting":
		return cmdAccounting(c, *from, *to, *by, *output, stdout)
	case "reload":
		var res hub.ReloadResult
		if err := c.do("POST", "/api/v1/reload", &res); err != nil {
			return err
		}
		if *output == "json" {
			return json.NewEncoder(stdout).Encode(res)
		}
		msg := "reloaded: nothing changed"
		if len(res.Applied) > 0 {
			msg = "reloaded: applied " + strings.Join(res.Applied, ", ")
		}
		if len(res.NeedRestart) > 0 {
			msg += "; changed but applied only after a restart: " + strings.Join(res.NeedRestart, ", ")
		}
		_, err := fmt.Fprintln(stdout, msg)
		return err
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func cmdStatus(c *client, output string, stdout io.Writer) error {
	if output == "json" {
		var raw []byte
		if err := c.do("GET", "/api/v1/summary", &raw); err != nil {
			return err
		}
		_, err := stdout.Write(raw)
		return err
	}
	var s hub.Summary
	if err := c.do("GET", "/api/v1/summary", &s); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hub %s at %s: %d idle, %d running jobs", s.HubID, s.At.UTC().Format(time.RFC3339), s.Idle, s.Running)
	if s.DemandError != "" {
		fmt.Fprintf(stdout, "; JOB SOURCE FAILING: %s", s.DemandError)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', tabwriter.AlignRight)
	head := []string{"SITE", "AGENT", "API", "MODE"}
	for _, st := range hub.DisplayStates {
		head = append(head, strings.ToUpper(st))
	}
	head = append(head, "CORES", "FOREIGN", "PLANNER")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, site := range s.Sites {
		agent, api := "down", "down"
		if site.Connected {
			agent = "up"
		}
		if site.APIUp {
			api = strconv.Itoa(site.APIMillis) + "ms"
		}
		mode := site.Mode
		switch {
		case mode != "":
		case site.Disabled:
			mode = "disabled"
		case site.Paused:
			mode = "paused"
		default:
			mode = "-"
		}
		row := []string{site.Name, agent, api, mode}
		for _, st := range hub.DisplayStates {
			row = append(row, strconv.Itoa(site.Counts[st]))
		}
		planner := string(site.State)
		if site.Reason != "" {
			planner += ": " + site.Reason
		}
		row = append(row, strconv.Itoa(site.CanopyCores), strconv.Itoa(site.ForeignCores), planner)
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	tw = tabwriter.NewWriter(stdout, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GROUP\tIDLE\tRUNNING\tWAITING\t")
	for _, g := range s.Groups {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", g.Name, g.Idle, g.Running, g.Waiting)
	}
	for _, u := range s.Unmatchable {
		fmt.Fprintf(stdout, "unmatchable: %d jobs of %s/%s (%d cpus, %d MiB): %s\n", u.Count, u.Group, u.VMType, u.Cpus, u.MemoryMiB, u.Why)
	}
	return tw.Flush()
}

func cmdVMs(c *client, site, state, output string, stdout io.Writer) error {
	var vms []hub.VMStatus
	if err := c.do("GET", "/api/v1/vms", &vms); err != nil {
		return err
	}
	vms = slices.DeleteFunc(vms, func(v hub.VMStatus) bool {
		return (site != "" && v.Site != site) || (state != "" && hub.DisplayState(&v) != state)
	})
	if output == "json" {
		return json.NewEncoder(stdout).Encode(vms)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSITE\tGROUP\tFLAVOR\tSTATE\tJOBS\tFAULT")
	for _, v := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", v.ID, v.Name, v.Site, v.Group, v.Flavor, hub.DisplayState(&v), v.RunningJobs, v.Fault)
	}
	return tw.Flush()
}

func cmdEvents(c *client, kind, site string, limit int, output string, stdout io.Writer) error {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if site != "" {
		q.Set("site", site)
	}
	q.Set("limit", strconv.Itoa(limit))
	var evs []intent.Event
	if err := c.do("GET", "/api/v1/events?"+q.Encode(), &evs); err != nil {
		return err
	}
	if output == "json" {
		return json.NewEncoder(stdout).Encode(evs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN (UTC)\tSITE\tKIND\tVM\tDETAIL")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format(time.DateTime), e.Site, e.Kind, e.VM, e.Detail)
	}
	return tw.Flush()
}

func cmdAccounting(c *client, from, to, by, output string, stdout io.Writer) error {
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to, "by": by} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if output == "csv" {
		q.Set("format", "csv")
		var raw []byte
		if err := c.do("GET", "/api/v1/accounting?"+q.Encode(), &raw); err != nil {
			return err
		}
		_, err := stdout.Write(raw)
		return err
	}
	var rows []ledger.Row
	if err := c.do("GET", "/api/v1/accounting?"+q.Encode(), &rows); err != nil {
		return err
	}
	if output == "json" {
		return json.NewEncoder(stdout).Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DAY\tGROUP\tCLOUD\tVM-HOURS\tCORE-HOURS\tHS06-HOURS\tJOBS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t\n", r.Day, r.Group, r.Site, r.VMSeconds/3600, r.CoreSeconds/3600, r.HS06Seconds/3600, r.JobsStarted)
	}
	return tw.Flush()
}

// tlsIssueAdmin issues an admin's client certificate.
func tlsIssueAdmin(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hub tls issue-admin", flag.ContinueOnError)
	dir := fs.String("dir", "/etc/canopy/pki", "the CA directory")
	out := fs.String("out", "", "where to write NAME.crt, NAME.key and ca.crt (default: DIR/admins)")
	days := fs.Int("days", 90, "validity in days")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	}
	if name == "" {
		return fmt.Errorf("%w: hub tls issue-admin NAME", errUsage)
	}
	if *days <= 0 {
		return fmt.Errorf("%w: --days %d: want a positive number", errUsage, *days)
	}
	if *out == "" {
		*out = filepath.Join(*dir, "admins")
	}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	now := time.Now()
	iss, err := ca.IssueAdmin(name, now.Add(-time.Hour), now.AddDate(0, 0, *days))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, pki.CACertFile))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	for f, b := range map[string][]byte{name + ".crt": iss.CertPEM, name + ".key": iss.KeyPEM, "ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(*out, f), b, 0o600); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "issued admin certificate for %s (serial %s) in %s\n", name, pki.SerialHex(iss.Serial), *out)
	return err
}

// loadConfig reads and checks a hub config; errors name the file (and,
// from the decoder, the line and key).
func loadConfig(path string) (hub.Config, error) {
	var cfg hub.Config
	if err := config.Load(path, &cfg); err != nil {
		return hub.Config{}, err
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return hub.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// watchReload reloads the config at every signal on hup until ctx ends;
// a config that does not load is logged and the running one kept.
func watchReload(ctx context.Context, hup <-chan os.Signal, reload func() error, logf func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := reload(); err != nil {
				logf(err)
			}
		}
	}
}
