package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/imagecopy"
	"github.com/canopy-grid/canopy/protocol"
)

// progressSink sends image copy progress on the current hub session.
type progressSink struct {
	mu   sync.Mutex
	conn *protocol.Conn
}

func (p *progressSink) set(c *protocol.Conn) {
	p.mu.Lock()
	p.conn = c
	p.mu.Unlock()
}

func (p *progressSink) send(m protocol.ImageProgress) {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c != nil {
		_ = c.Send(m) // a lost report is replaced by the next one or the result
	}
}

// copyImage carries out an image copy command: it reads the source site's
// Glance directly (Config.ImageSources) and streams into this site's.
func (a *Agent) copyImage(ctx context.Context, id string, c protocol.ImageCopyCommand) ([]string, error) {
	dst, ok := a.driver.(imagecopy.Dest)
	if !ok {
		return nil, invalidf("this site's cloud driver cannot take image copies")
	}
	src, ok := a.cfg.ImageSources[c.SourceSite]
	if !ok {
		return nil, invalidf("no image source configured for site %q (agent config image_sources); relaying through its agent is not built", c.SourceSite)
	}
	// One copy of an image at a time: a second one (a hub that restarted
	// and lost track of the first) would delete the first one's upload as
	// a leftover.
	key := c.Ref.Name + "|" + c.Ref.Algo + ":" + c.Ref.Hex
	if _, busy := a.copying.LoadOrStore(key, id); busy {
		return nil, transientf("a copy of %s is already under way", c.Ref)
	}
	defer a.copying.Delete(key)
	log := a.log.WithFields(logrus.Fields{"image": c.Ref.Name, "source_site": c.SourceSite, "command": id})
	log.WithField("bytes", c.SizeBytes).Info("image copy starting")
	task := imagecopy.Task{Ref: c.Ref, SourceImageID: c.SourceImageID, SizeBytes: c.SizeBytes, HubID: a.currentHubID()}
	task.Meta.DiskFormat, task.Meta.ContainerFormat, task.Meta.Checksums = c.DiskFormat, c.ContainerFormat, c.Checksums
	a.metrics.imageCopiesInFlight.Inc()
	defer a.metrics.imageCopiesInFlight.Dec()
	var last int64
	im, err := imagecopy.Copy(ctx, task, src, dst, imagecopy.Options{
		Log: func(msg string, err error) { log.WithError(err).Warn(msg) },
		Report: func(p imagecopy.Progress) {
			a.metrics.imageBytes.Add(float64(max(p.Bytes-last, 0)))
			last = p.Bytes
			if p.State == protocol.CopyStarting {
				last = 0
			}
			m := protocol.ImageProgress{CommandID: id, Ref: c.Ref, State: p.State, Attempt: p.Attempt, Bytes: p.Bytes,
				Total: p.Total, RateBps: p.RateBps, ETA: p.ETA, At: a.now().UTC()}
			if p.Err != nil {
				m.Error = clipText(p.Err.Error())
			}
			a.progress.send(m)
		}})
	a.mu.Lock()
	a.slowAt = time.Time{} // list images again at the next inventory
	a.mu.Unlock()
	a.markChanged()
	if err != nil {
		a.metrics.imageCopies.WithLabelValues("failed").Inc()
		return nil, fmt.Errorf("copy image %s from %s: %w", c.Ref, c.SourceSite, err)
	}
	a.metrics.imageCopies.WithLabelValues("ok").Inc()
	log.WithField("image_id", im.ID).Info("image copied and verified")
	return []string{im.ID}, nil
}

// deleteImage deletes one image Canopy copied in: only one carrying this
// hub's canopy_hub property, never one a server of the project uses.
func (a *Agent) deleteImage(ctx context.Context, c protocol.ImageDeleteCommand) ([]string, []protocol.Refusal, error) {
	dst, ok := a.driver.(imagecopy.Dest)
	if !ok {
		return nil, nil, invalidf("this site's cloud driver cannot delete images")
	}
	im, err := dst.GetImage(ctx, c.ImageID)
	if err != nil {
		return nil, nil, err
	}
	if hub := a.currentHubID(); im.Hub == "" || im.Hub != hub {
		return nil, []protocol.Refusal{{VMID: c.ImageID, Reason: fmt.Sprintf("image %s is not this hub's (canopy_hub %q)", im.Name, im.Hub)}}, nil
	}
	l, err := a.listing.get(ctx, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("servers: %w", err)
	}
	users := 0
	for _, s := range l.servers {
		if s.Image == c.ImageID {
			users++
		}
	}
	if users > 0 {
		return nil, []protocol.Refusal{{VMID: c.ImageID, Reason: fmt.Sprintf("image %s is used by %d server(s)", im.Name, users)}}, nil
	}
	if err := dst.DeleteImage(ctx, c.ImageID); err != nil {
		return nil, nil, err
	}
	a.log.WithFields(logrus.Fields{"image": im.Name, "image_id": c.ImageID, "why": c.Reason}).Info("image deleted")
	a.mu.Lock()
	a.slowAt = time.Time{}
	a.mu.Unlock()
	a.markChanged()
	return []string{c.ImageID}, nil, nil
}

// clipText bounds an error text to what a message may carry.
func clipText(s string) string {
	if len(s) > 4000 {
		return s[:4000]
	}
	return s
}

// transientError is a failure worth retrying later.
type transientError struct{ msg string }

// Error returns the message.
func (e transientError) Error() string { return e.msg }

// ErrorClass reports the class the hub sees: transient.
func (e transientError) ErrorClass() protocol.ErrorClass { return protocol.ErrClassTransient }

func transientf(format string, args ...any) error {
	return transientError{fmt.Sprintf(format, args...)}
}
