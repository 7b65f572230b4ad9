// Package deploy holds how Canopy is run for real: example configurations
// (the demo runs from them), workload traces for the simulated pool,
// systemd units, and the project's testbed scripts. The example configs and
// traces are embedded so tools can start from exactly what is documented.
package deploy

import "embed"

// Examples holds examples/*.yaml and traces/*.yaml.
//
//go:embed examples/*.yaml traces/*.yaml
var Examples embed.FS
