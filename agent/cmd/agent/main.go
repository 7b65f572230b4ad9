// Command agent is Canopy's site agent: one per cloud tenant.
//
//	agent run --config agent.yaml
//	agent local-cloud stop --dir DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/gluster"
	"github.com/canopy-grid/canopy/agent/imagecopy"
	"github.com/canopy-grid/canopy/agent/localcloud"
	"github.com/canopy-grid/canopy/agent/openstack"
	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// fileConfig is the agent's config file: the agent's own settings and one
// cloud driver section.
type fileConfig struct {
	agent.Config `yaml:",inline"`
	// Driver is "local" (VMs as local processes) or "openstack".
	Driver string             `yaml:"driver"`
	Local  *localcloud.Config `yaml:"local"`
	// OpenStack configures the OpenStack driver (credentials may come
	// from OS_* environment variables instead; they are never logged).
	OpenStack *openstack.Config `yaml:"openstack"`
	// Gluster, when present, makes the agent watch the site's GlusterFS
	// replicas (volumes, bricks, heals, geo-replication).
	Gluster *gluster.Config `yaml:"gluster"`
	// ImageSources are read credentials for other sites' Glance, by site
	// name: image copies into this site read their bytes there directly.
	ImageSources map[string]*openstack.Config `yaml:"image_sources"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  agent run --config FILE [--log-format text|json] [--log-level LEVEL]
  agent squid --hub-url URL --token-file FILE --host H --port N [--kinds cvmfs,frontier]
              [--access global|same-domain|local-only] [--site S] [--domain D]
              [--cache-manager URL] [--max-load KBps] [--every 60s]
                      advertise a squid on this cache host to the hub
  agent local-cloud stop --dir DIR
                      stop every VM of the local cloud in DIR (the local:
                      section's dir); VMs outlive the agent that booted them
`

func run(args []string) error {
	if len(args) > 0 && args[0] == "squid" {
		return runSquid(args[1:])
	}
	if len(args) > 0 && args[0] == "local-cloud" {
		return runLocalCloud(args[1:])
	}
	if len(args) == 0 || args[0] != "run" {
		return errors.New("no command given; " + strings.ReplaceAll(strings.TrimSpace(usage), "\n", "; "))
	}
	fs := flag.NewFlagSet("agent run", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/canopy/agent.yaml", "config file")
	logFormat := fs.String("log-format", "text", "text or json")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	log := logrus.New()
	lv, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lv)
	if *logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	}

	var fc fileConfig
	if err := config.Load(*cfgPath, &fc); err != nil {
		return err
	}
	var cloud driver.Driver
	switch fc.Driver {
	case "local":
		if fc.Local == nil {
			return fmt.Errorf("%s: driver local needs a local: section", *cfgPath)
		}
		d, err := localcloud.New(*fc.Local)
		if err != nil {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
		defer d.Close()
		cloud = d
	case "openstack":
		if fc.OpenStack == nil {
			fc.OpenStack = &openstack.Config{}
		}
		fc.OpenStack.FillFromEnv(os.LookupEnv)
		if err := fc.OpenStack.Validate(); err != nil {
			return fmt.Errorf("%s: openstack: %w", *cfgPath, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		d, err := openstack.New(ctx, *fc.OpenStack, log.WithFields(logrus.Fields{"component": "openstack", "site": fc.Site}))
		cancel()
		if err != nil {
			return fmt.Errorf("%s: openstack: %w", *cfgPath, err)
		}
		cloud = d
		oc := *fc.OpenStack
		fc.Config.Policy = &protocol.SitePolicy{Disabled: !oc.IsEnabled(), KeepAlive: oc.KeepAlive, CoresSoftMax: oc.CoresSoftMax}
	default:
		return fmt.Errorf("%s: driver %q: want local or openstack", *cfgPath, fc.Driver)
	}
	for site, oc := range fc.ImageSources {
		if oc == nil {
			return fmt.Errorf("%s: image_sources.%s: empty", *cfgPath, site)
		}
		if err := oc.Validate(); err != nil {
			return fmt.Errorf("%s: image_sources.%s: %w", *cfgPath, site, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		d, err := openstack.New(ctx, *oc, log.WithFields(logrus.Fields{"component": "image-source", "site": fc.Site, "source_site": site}))
		cancel()
		if err != nil {
			return fmt.Errorf("%s: image_sources.%s: %w", *cfgPath, site, err)
		}
		if fc.Config.ImageSources == nil {
			fc.Config.ImageSources = map[string]imagecopy.Source{}
		}
		fc.Config.ImageSources[site] = d
	}
	a, err := agent.New(fc.Config, cloud, log.WithField("component", "agent"))
	if err != nil {
		return fmt.Errorf("%s: %w", *cfgPath, err)
	}
	defer func() {
		if err := a.Close(); err != nil {
			log.WithError(err).Error("close agent state")
		}
	}()
	if fc.Gluster != nil {
		gc := *fc.Gluster
		gc.Log = log.WithFields(logrus.Fields{"component": "gluster", "site": fc.Site})
		a.SetStorage(gluster.New(nil, gc))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// runLocalCloud runs `agent local-cloud stop --dir DIR`.
func runLocalCloud(args []string) error {
	if len(args) == 0 || args[0] != "stop" {
		return errors.New("usage: agent local-cloud stop --dir DIR")
	}
	fs := flag.NewFlagSet("agent local-cloud stop", flag.ContinueOnError)
	dir := fs.String("dir", "", "the local cloud's directory (the config's local.dir)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("agent local-cloud stop needs --dir")
	}
	n, err := localcloud.StopAll(*dir)
	if err != nil {
		return err
	}
	fmt.Printf("stopped %d VMs of the local cloud in %s\n", n, *dir)
	return nil
}

// runSquid advertises one squid to the hub until stopped (replaces shoal's
// agent on the cache host).
func runSquid(args []string) error {
	fs := flag.NewFlagSet("agent squid", flag.ContinueOnError)
	hubURL := fs.String("hub-url", "", "the hub's HTTP API, e.g. https://hub.example.org")
	tokenFile := fs.String("token-file", "", "file holding the hub's squid advertise token")
	host := fs.String("host", "", "the squid's address as clients reach it")
	port := fs.Int("port", 3128, "the squid's port")
	kinds := fs.String("kinds", "cvmfs,frontier", "upstream kinds it serves")
	access := fs.String("access", "global", "global, same-domain or local-only")
	site := fs.String("site", "", "site the squid belongs to")
	domain := fs.String("domain", "", "DNS domain for same-domain access")
	mgr := fs.String("cache-manager", "", "squid's own URL for load readings, e.g. http://127.0.0.1:3128")
	maxLoad := fs.Float64("max-load", 0, "load (KB/s) at which the squid counts as full; 0 = hub default")
	every := fs.Duration("every", time.Minute, "how often to advertise")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hubURL == "" || *tokenFile == "" || *host == "" {
		return errors.New("agent squid needs --hub-url, --token-file and --host")
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("read token: %w", err)
	}
	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	reg := squidreg.Registration{Host: *host, Port: *port, Access: squidreg.Access(*access), Site: *site, Domain: *domain, MaxLoad: *maxLoad}
	for _, k := range strings.Split(*kinds, ",") {
		reg.Kinds = append(reg.Kinds, squidreg.Kind(strings.TrimSpace(k)))
	}
	if _, err := reg.Normalize(); err != nil {
		return err
	}
	adv := &squidreg.Advertiser{HubURL: *hubURL, Token: strings.TrimSpace(string(tok)), Registration: reg, Every: *every,
		Log: log.WithField("component", "squid-advertiser")}
	if *mgr != "" {
		adv.Load = (&squidreg.LoadMeter{URL: *mgr}).Load
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return adv.Run(ctx)
}
