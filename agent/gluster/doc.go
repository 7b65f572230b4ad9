// Package gluster watches the health of a site's GlusterFS storage: it runs
// the gluster CLI (with --xml) through a Runner, parses what gluster 10 and
// older releases print, and turns it into the health model of
// protocol.StorageReport: per volume up/partial/degraded/down with bricks
// online, pending heals, split-brain and client quorum; per
// geo-replication session the workers, their lag and the checkpoint; and
// an overall status for the site.
//
// Everything gluster prints is untrusted input: malformed output gives an
// error naming the command and what was wrong, never a panic, and a failed
// command makes only the part of the report it feeds unknown.
//
// Use (in the agent):
//
//	c := gluster.New(nil, gluster.Config{}) // defaults: DefaultConfig
//	report, err := c.Collect(ctx)           // one cycle; err only if ctx ended
//
// One cycle runs, at most Config.MaxConcurrent at a time:
//
//	gluster --mode=script --xml volume info
//	gluster --mode=script --xml volume status all detail   (bricks, sizes)
//	gluster --mode=script --xml volume status all          (self-heal daemons)
//	gluster --mode=script --xml peer status
//	gluster --mode=script --xml volume geo-replication status detail
//	gluster --mode=script --xml volume heal VOL info summary       (replicated volumes)
//	gluster --mode=script --xml volume heal VOL info split-brain   (only when the summary counts some)
//
// Measured on the 2-core test bed (one replica 3 arbiter 1 volume, one
// geo-replication session): a cycle costs about 1.2 CPU-seconds in the CLI
// processes and as much again in glusterd's gsyncd runs for the
// geo-replication status, which also dominates its wall time (1 s idle,
// 9 s on a loaded machine). Collect every minute or less often.
//
// The hub exports reports with package hub/storagemetrics; alert rules for its
// metrics are in deploy/prometheus/gluster-alerts.yml.
package gluster
