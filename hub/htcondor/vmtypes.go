package htcondor

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/canopy-grid/canopy/hub/classad"
)

// defaultMachineAd is what every VM type's startd advertises unless the
// config says otherwise: a Linux x86_64 VM with file transfer, whose START
// is vmagent's and whose Requirements add HTCondor's own resource check
// (WithinResourceLimits as HTCondor 24 writes it for a partitionable slot).
var defaultMachineAd = map[string]string{
	"MyType":               `"Machine"`,
	"TargetType":           `"Job"`,
	"Arch":                 `"X86_64"`,
	"OpSys":                `"LINUX"`,
	"HasFileTransfer":      `true`,
	"SlotType":             `"Partitionable"`,
	"PartitionableSlot":    `true`,
	"GPUs":                 `0`,
	"Start":                DefaultStart,
	"Requirements":         `START && (WithinResourceLimits)`,
	"WithinResourceLimits": `(MY.Cpus > 0 && TARGET.RequestCpus <= MY.Cpus && MY.Memory > 0 && TARGET.RequestMemory <= MY.Memory && MY.Disk > 0 && TARGET.RequestDisk <= MY.Disk && (TARGET.RequestGPUs =?= undefined || MY.GPUs >= TARGET.RequestGPUs))`,
}

// evalEnv evaluates with the system clock.
var evalEnv = &classad.Env{}

// vmType is a configured VM type, its machine ad parsed.
type vmType struct {
	name string
	// base is the machine ad without size, group or VM type; never changed
	// after New.
	base *classad.Ad
}

// compileVMTypes parses the machine ads of the configured VM types.
func compileVMTypes(cfg Config) ([]*vmType, error) {
	var out []*vmType
	for _, t := range cfg.VMTypes {
		ad := classad.NewAd()
		for _, layer := range []map[string]string{defaultMachineAd, cfg.MachineAd, t.Attributes} {
			for _, k := range slices.Sorted(maps.Keys(layer)) {
				if err := ad.SetExpr(k, layer[k]); err != nil {
					return nil, fmt.Errorf("vm type %s: %w", t.Name, err)
				}
			}
		}
		out = append(out, &vmType{name: t.Name, base: ad})
	}
	return out, nil
}

// size is what a job asks of a machine.
type size struct {
	cpus    int
	memMiB  int
	diskKiB int64
}

// machineAd returns the ad a startd of this VM type would advertise for a
// VM of the given size booted for group: its partitionable slot, with the
// whole VM unclaimed.
func (t *vmType) machineAd(names AttributeNames, group string, sz size) *classad.Ad {
	ad := t.base.Clone()
	cpus, mem, disk := classad.IntValue(int64(sz.cpus)), classad.IntValue(int64(sz.memMiB)), classad.IntValue(sz.diskKiB)
	for _, n := range []string{"Cpus", "TotalCpus", "TotalSlotCpus", "DetectedCpus"} {
		ad.SetValue(n, cpus)
	}
	for _, n := range []string{"Memory", "TotalMemory", "TotalSlotMemory", "DetectedMemory"} {
		ad.SetValue(n, mem)
	}
	for _, n := range []string{"Disk", "TotalDisk", "TotalSlotDisk"} {
		ad.SetValue(n, disk)
	}
	ad.SetValue(names.VMType, classad.StringValue(t.name))
	ad.SetValue(names.Group, classad.StringValue(group))
	return ad
}

// attributeNames lists the attribute names of every VM type's machine ad,
// which is what a slot ad must carry for a job's Requirements to be
// evaluated against it.
func attributeNames(types []*vmType) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range types {
		for _, n := range t.base.Names() {
			if k := strings.ToLower(n); !seen[k] {
				seen[k] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// matchReason says why job and machine do not match ("" when they do).
func matchReason(job, machine *classad.Ad, vmType string) string {
	jobOK, machineOK := evalEnv.MatchSides(job, machine)
	switch {
	case jobOK && machineOK:
		return ""
	case !jobOK && !machineOK:
		return fmt.Sprintf("its Requirements reject VM type %s and that type's START rejects it", vmType)
	case !jobOK:
		return fmt.Sprintf("its Requirements reject VM type %s", vmType)
	}
	return fmt.Sprintf("VM type %s's START/Requirements reject it", vmType)
}
