// Command hub is Canopy's central manager: it runs next to the HTCondor
// collector, plans VMs across clouds and commands the site agents.
//
//	hub run --config hub.yaml
//	hub tls init --dir DIR [--host NAME]...
//	hub tls issue-agent --dir DIR --site NAME --out DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/trace"
	"github.com/canopy-grid/canopy/protocol/pki"
)

const usage = `usage:
  hub run --config FILE                     run the hub
  hub simulate --trace FILE [flags]         replay a workload through the planner on simulated clouds
  hub tls init --dir DIR [--host H]...      create the CA and the hub's certificate
  hub tls issue-agent --dir DIR --site NAME [--out DIR] [--days N]
                                            issue a site agent's certificate
`

// errUsage marks command-line mistakes: the usage text follows the error.
var errUsage = errors.New("usage")

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "run":
		return runHub(args[1:])
	case "simulate":
		return runSimulate(args[1:], stdout)
	case "tls":
		if len(args) < 2 {
			return fmt.Errorf("%w: tls needs init or issue-agent", errUsage)
		}
		switch args[1] {
		case "init":
			return tlsInit(args[2:], stdout)
		case "issue-agent":
			return tlsIssueAgent(args[2:], stdout)
		}
	case "-h", "--help", "help":
		_, err := io.WriteString(stdout, usage)
		return err
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, strings.Join(args, " "))
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func tlsInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hub tls init", flag.ContinueOnError)
	dir := fs.String("dir", "/etc/canopy/pki", "directory for the CA and hub certificate")
	var hosts listFlag
	fs.Var(&hosts, "host", "name or address agents dial the hub by (repeatable; default localhost and 127.0.0.1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(hosts) == 0 {
		hosts = listFlag{"localhost", "127.0.0.1"}
	}
	if err := pki.InitCA(*dir, hosts, time.Now()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "created CA and hub certificate in %s for %s\n", *dir, hosts.String())
	return err
}

func tlsIssueAgent(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hub tls issue-agent", flag.ContinueOnError)
	dir := fs.String("dir", "/etc/canopy/pki", "the CA directory")
	site := fs.String("site", "", "the site name (the agent's identity)")
	out := fs.String("out", "", "where to write SITE.crt, SITE.key and ca.crt (default: DIR/agents)")
	days := fs.Int("days", 365, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(*dir, "agents")
	}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	now := time.Now()
	iss, err := ca.IssueAgent(*site, now.Add(-time.Hour), now.AddDate(0, 0, *days))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, pki.CACertFile))
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{*site + ".crt": iss.CertPEM, *site + ".key": iss.KeyPEM, "ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o600); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "issued agent certificate for site %s (serial %s) in %s\n", *site, pki.SerialHex(iss.Serial), *out)
	return err
}

func runHub(args []string) error {
	fs := flag.NewFlagSet("hub run", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/canopy/hub.yaml", "config file")
	logFormat := fs.String("log-format", "text", "text or json")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		return err
	}
	var cfg hub.Config
	if err := config.Load(*cfgPath, &cfg); err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", *cfgPath, err)
	}
	src, err := newSource(cfg, filepath.Dir(*cfgPath), log)
	if err != nil {
		return err
	}
	h, err := hub.New(cfg, src, log.WithField("component", "hub"))
	if err != nil {
		return err
	}
	if hc, ok := src.(*htcondor.Source); ok {
		hc.Manual = h.HeldByName // never invalidate a held VM's ads
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return h.Run(ctx, nil)
}

func newSource(cfg hub.Config, base string, log *logrus.Logger) (hub.Source, error) {
	switch cfg.Demand.Source {
	case "trace":
		path := cfg.Demand.Trace.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(base, path)
		}
		w, err := trace.Load(path)
		if err != nil {
			return nil, err
		}
		return trace.New(w, cfg.Demand.Trace.TimeScale)
	case "htcondor":
		hc := cfg.Demand.HTCondor
		return htcondor.New(hc, hc.Runner(), log.WithField("component", "htcondor"))
	}
	return nil, fmt.Errorf("demand source %q is not available", cfg.Demand.Source)
}

func newLogger(format, level string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lv)
	switch format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return log, nil
}
