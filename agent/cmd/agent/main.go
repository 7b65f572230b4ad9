// Command agent is Canopy's site agent: one per cloud tenant.
//
//	agent run --config agent.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent"
	"github.com/canopy-grid/canopy/agent/gluster"
	"github.com/canopy-grid/canopy/agent/localcloud"
	"github.com/canopy-grid/canopy/deploy/config"
)

// fileConfig is the agent's config file: the agent's own settings and one
// cloud driver section.
type fileConfig struct {
	agent.Config `yaml:",inline"`
	// Driver is "local" (VMs as local processes) or "openstack".
	Driver string             `yaml:"driver"`
	Local  *localcloud.Config `yaml:"local"`
	// Gluster, when present, makes the agent watch the site's GlusterFS
	// replicas (volumes, bricks, heals, geo-replication).
	Gluster *gluster.Config `yaml:"gluster"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		return errors.New("usage: agent run --config FILE [--log-format text|json] [--log-level LEVEL]")
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
	var driver agent.Driver
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
		driver = d
	default:
		return fmt.Errorf("%s: driver %q: want local", *cfgPath, fc.Driver)
	}
	a, err := agent.New(fc.Config, driver, log.WithField("component", "agent"))
	if err != nil {
		return fmt.Errorf("%s: %w", *cfgPath, err)
	}
	if fc.Gluster != nil {
		gc := *fc.Gluster
		gc.Log = log.WithFields(logrus.Fields{"component": "gluster", "site": fc.Site})
		a.SetStorage(gluster.New(nil, gc))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
