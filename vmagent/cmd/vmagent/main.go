// Command vmagent runs inside every worker VM (baked into the image).
//
//	vmagent run [--metadata-url URL | --config-drive DIR|auto | --metadata-dir DIR] [--root DIR] [--condor-bin DIR] [--condor-sbin DIR] [--no-condor]
//
// The metadata comes from the OpenStack metadata service (the default), a
// config drive (mounted at DIR, or with "auto" mounted by the vmagent from
// /dev/disk/by-label/config-2), or a plain directory holding meta_data.json
// and user_data (tests).
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

	"github.com/canopy-grid/canopy/vmagent"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vmagent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		return errors.New("usage: vmagent run [--metadata-url URL | --config-drive DIR|auto | --metadata-dir DIR] [--root DIR] [--condor-bin DIR] [--condor-sbin DIR] [--no-condor]")
	}
	fs := flag.NewFlagSet("vmagent run", flag.ContinueOnError)
	mdURL := fs.String("metadata-url", "http://169.254.169.254", "OpenStack metadata service")
	drive := fs.String("config-drive", "", `read metadata from a config drive mounted at DIR instead ("auto": mount it at /run/canopy/config-drive)`)
	mdDir := fs.String("metadata-dir", "", "read meta_data.json and user_data from a plain directory instead")
	root := fs.String("root", "/", "prefix for every file written")
	gossipBind := fs.String("gossip-bind", "", "address the gossip member listens on (default 0.0.0.0:7946)")
	noCondor := fs.Bool("no-condor", false, "log HTCondor commands instead of running them (local test VMs)")
	testJobs := fs.String("test-jobs-file", "", `TEST ONLY (local test VMs): report the job count written in this file under --root ("RUNNING CLAIMED")`)
	condorBin := fs.String("condor-bin", "", "where HTCondor's user tools are (condor_status, condor_who); default: the sibling of --condor-sbin, or PATH")
	condorSbin := fs.String("condor-sbin", "", "where HTCondor's daemons and admin tools are (condor_master, condor_off); default: the sibling of --condor-bin, or PATH")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	entry := log.WithField("component", "vmagent")

	var runner vmagent.CommandRunner = vmagent.ExecRunner{CondorBin: *condorBin, CondorSbin: *condorSbin}
	if *noCondor {
		runner = vmagent.LogRunner{Log: entry}
	}
	var src vmagent.MetadataSource = vmagent.HTTPSource{BaseURL: *mdURL}
	switch {
	case *drive == "auto":
		src = vmagent.ConfigDrive{Dir: "/run/canopy/config-drive", Device: vmagent.DefaultConfigDriveDevice, Runner: vmagent.ExecRunner{}}
	case *drive != "":
		src = vmagent.ConfigDrive{Dir: *drive}
	case *mdDir != "":
		src = vmagent.DirSource{Dir: *mdDir}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := vmagent.Options{Root: *root, Source: src, Runner: runner, Log: entry, GossipBind: *gossipBind}
	if *testJobs != "" {
		o.Jobs = vmagent.TestJobsFile{Root: *root, Path: *testJobs}.Count
	}
	return vmagent.Run(ctx, o)
}
