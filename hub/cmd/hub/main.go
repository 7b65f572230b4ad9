// Command hub is Canopy's central manager: it runs next to the HTCondor
// collector, plans VMs across clouds and commands the site agents.
//
//	hub run --config hub.yaml
//	hub image want|unwant|ls|status
//	hub tls init --dir DIR [--host NAME]...
//	hub tls issue-agent --dir DIR --site NAME --out DIR [--vm-host H]... [--vm-only]
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

	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/trace"
	"github.com/canopy-grid/canopy/protocol/pki"
)

const usage = `usage:
  hub run --config FILE                     run the hub (SIGHUP: reload the config)
  hub status [-o json]                      the per-site table of the running hub
  hub site pause|resume|disable|drain NAME  change a site at run time (logged; "hub cloud" is the same)
  hub vm ls [--site S] [--state S] [-o json] list VMs
  hub vm hold|release|retire ID             act on one VM (logged)
  hub events [--kind K] [--site S] [--limit N] [-o json]
  hub accounting [--from DAY] [--to DAY] [--by group,site,day] [-o table|json|csv]
  hub reload                                re-read the running hub's config (as SIGHUP)
      operator commands reach the hub by its admin socket (found from --config, default
      /etc/canopy/hub.yaml) or --hub https://HOST:PORT --cert NAME.crt --key NAME.key --ca ca.crt
  hub tls issue-admin NAME [--dir DIR] [--out DIR] [--days N]
                                            issue an admin's client certificate
  hub simulate --trace FILE [flags]         replay a workload through the planner on simulated clouds
  hub image want --hash ALGO:HEX IMAGE SITE...   want an image (name and digest) in sites
  hub image unwant IMAGE [SITE...]          stop wanting it there (Canopy's copies are deleted unless in use)
  hub image ls                              print the image x site matrix and the conflicts
  hub image status                          print the copies under way (bytes, rate, ETA)
  hub tls init --dir DIR [--host H]...      create the CA and the hub's certificate
  hub tls issue-agent --dir DIR --site NAME [--out DIR] [--days N] [--vm-host H]... [--vm-only]
                                            issue a site agent's certificate and, with
                                            --vm-host, its VM endpoint certificate
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
	case "image":
		return runImage(args[1:], stdout)
	case "status", "site", "cloud", "vm", "events", "accounting", "reload":
		return operator(args[0], args[1:], stdout)
	case "tls":
		if len(args) < 2 {
			return fmt.Errorf("%w: tls needs init or issue-agent", errUsage)
		}
		switch args[1] {
		case "init":
			return tlsInit(args[2:], stdout)
		case "issue-agent":
			return tlsIssueAgent(args[2:], stdout)
		case "issue-admin":
			return tlsIssueAdmin(args[2:], stdout)
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

// tlsIssueAgent issues a site agent's client certificate (its identity
// towards the hub) and, given --vm-host, its VM endpoint certificate (a
// server certificate for the names and addresses its VMs reach it by).
func tlsIssueAgent(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hub tls issue-agent", flag.ContinueOnError)
	dir := fs.String("dir", "/etc/canopy/pki", "the CA directory")
	site := fs.String("site", "", "the site name (the agent's identity)")
	out := fs.String("out", "", "where to write SITE.crt, SITE.key, SITE-vm.crt, SITE-vm.key and ca.crt (default: DIR/agents)")
	days := fs.Int("days", 365, "validity in days")
	var vmHosts listFlag
	fs.Var(&vmHosts, "vm-host", "a name or address the site's VMs reach the agent's VM endpoint by (repeatable): issues SITE-vm.crt")
	vmOnly := fs.Bool("vm-only", false, "issue only the VM endpoint certificate (e.g. when the agent's VM-facing addresses change)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vmOnly && len(vmHosts) == 0 {
		return fmt.Errorf("%w: --vm-only needs at least one --vm-host", errUsage)
	}
	if *days <= 0 {
		return fmt.Errorf("%w: --days %d: want a positive number", errUsage, *days)
	}
	if *out == "" {
		*out = filepath.Join(*dir, "agents")
	}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	now := time.Now()
	files := map[string][]byte{}
	var said []string
	if !*vmOnly {
		iss, err := ca.IssueAgent(*site, now.Add(-time.Hour), now.AddDate(0, 0, *days))
		if err != nil {
			return err
		}
		files[*site+".crt"], files[*site+".key"] = iss.CertPEM, iss.KeyPEM
		said = append(said, fmt.Sprintf("issued agent certificate for site %s (serial %s)", *site, pki.SerialHex(iss.Serial)))
	}
	if len(vmHosts) > 0 {
		iss, err := ca.IssueAgentVM(*site, vmHosts, now.Add(-time.Hour), now.AddDate(0, 0, *days))
		if err != nil {
			return err
		}
		files[*site+"-vm.crt"], files[*site+"-vm.key"] = iss.CertPEM, iss.KeyPEM
		said = append(said, fmt.Sprintf("issued VM endpoint certificate for site %s, %s (serial %s)", *site, vmHosts.String(), pki.SerialHex(iss.Serial)))
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, pki.CACertFile))
	if err != nil {
		return err
	}
	files["ca.crt"] = caPEM
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o600); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "%s in %s\n", strings.Join(said, "; "), *out)
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
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
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
	h.SetReloader(func() (hub.Config, error) { return loadConfig(*cfgPath) })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go watchReload(ctx, hup, func() error { return reloadFile(ctx, h, *cfgPath, log) }, func(err error) {
		log.WithError(err).Error("config reload refused; the running config stays")
	})
	return h.Run(ctx, nil)
}

// reloadFile re-reads the config file and applies it to a running hub.
func reloadFile(ctx context.Context, h *hub.Hub, path string, log *logrus.Logger) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := h.Reload(rctx, cfg, "SIGHUP")
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"applied": strings.Join(res.Applied, ","), "need_restart": strings.Join(res.NeedRestart, ",")}).Info("config reloaded")
	return nil
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
