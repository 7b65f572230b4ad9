package classad

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func loadLong(t testing.TB, path string) []*Ad {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ads, err := ParseLong(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ads
}

// recordedJobs returns the job ads of 10_condor_q-long_all-states.txt by
// "cluster.proc".
func recordedJobs(t testing.TB) map[string]*Ad {
	jobs := map[string]*Ad{}
	for _, ad := range loadLong(t, "testdata/fixtures/recorded/10_condor_q-long_all-states.txt") {
		c, _ := ad.Eval("ClusterId").Int()
		p, _ := ad.Eval("ProcId").Int()
		jobs[fmt.Sprintf("%d.%d", c, p)] = ad
	}
	if len(jobs) != 9 {
		t.Fatalf("want 9 recorded jobs, got %d", len(jobs))
	}
	return jobs
}

// flavorMachines returns the hypothetical VM-flavor machine ads by Machine.
func flavorMachines(t testing.TB) (map[string]*Ad, []*Ad) {
	ads := loadLong(t, "testdata/61_match_flavor_slotads.ads")
	byName := map[string]*Ad{}
	for _, ad := range ads {
		name, _ := ad.Eval("Machine").Str()
		byName[name] = ad
	}
	if len(byName) != 3 {
		t.Fatalf("want 3 flavor ads, got %d", len(byName))
	}
	return byName, ads
}

// summaryRow is one line of condor_q -analyze:summary.
type summaryRow struct {
	job                         string
	matches, rejects, available int
}

var summaryLine = regexp.MustCompile(`^(\d+\.\d+)\s+\S+\s+(\d+)\s+(\d+)\s+\S+\s+\d+\s+(\d+)\s+\S+$`)

func parseSummary(t *testing.T, path string) map[string][]summaryRow {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sections := map[string][]summaryRow{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "### flavor "); ok {
			section = name
			continue
		}
		m := summaryLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
		sections[section] = append(sections[section], summaryRow{m[1], atoi(m[2]), atoi(m[3]), atoi(m[4])})
	}
	return sections
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMatchRecordedPerFlavor checks every decision of HTCondor's own
// matchmaker (condor_q -analyze:summary, one flavor at a time).
func TestMatchRecordedPerFlavor(t *testing.T) {
	jobs := recordedJobs(t)
	machines, _ := flavorMachines(t)
	sections := parseSummary(t, "testdata/61_match_analyze-summary_per-flavor.txt")
	if len(sections) != 3 {
		t.Fatalf("want 3 flavor sections, got %d", len(sections))
	}
	checked := 0
	for flavor, rows := range sections {
		m := machines[flavor]
		if m == nil {
			t.Fatalf("no machine ad for flavor %s", flavor)
		}
		for _, row := range rows {
			job := jobs[row.job]
			if job == nil {
				t.Fatalf("no job %s", row.job)
			}
			jobOK, machineOK := defaultEnv.MatchSides(job, m)
			got := summaryRow{row.job, b2i(jobOK), b2i(jobOK && !machineOK), b2i(Match(job, m))}
			if got != row {
				t.Errorf("job %s on %s: got matches/rejects/available %+v, HTCondor %+v", row.job, flavor, got, row)
			}
			checked++
		}
	}
	if checked != 15 {
		t.Fatalf("checked %d decisions, want 15", checked)
	}
}

// TestMatchRecordedAllFlavors checks the totals over all three flavors.
func TestMatchRecordedAllFlavors(t *testing.T) {
	jobs := recordedJobs(t)
	_, machines := flavorMachines(t)
	rows := parseSummary(t, "testdata/61_match_analyze-summary_all-flavors.txt")[""]
	if len(rows) != 5 {
		t.Fatalf("want 5 autocluster rows, got %d", len(rows))
	}
	for _, row := range rows {
		got := summaryRow{job: row.job}
		for _, m := range machines {
			jobOK, machineOK := defaultEnv.MatchSides(jobs[row.job], m)
			got.matches += b2i(jobOK)
			got.rejects += b2i(jobOK && !machineOK)
			got.available += b2i(jobOK && machineOK)
		}
		if got != row {
			t.Errorf("job %s: got %+v, HTCondor %+v", row.job, got, row)
		}
	}
}

// TestMatchBetterAnalyze checks the per-condition slot counts and the
// summary of condor_q -better-analyze for jobs 2.0 and 4.0.
func TestMatchBetterAnalyze(t *testing.T) {
	jobs := recordedJobs(t)
	_, machines := flavorMachines(t)
	step := regexp.MustCompile(`^\[\d+\]\s+(\d+)\s+(.+)$`)
	summary := regexp.MustCompile(`^(\d+) (are rejected by your job's requirements|reject your job because of their own requirements|are able to run your job)$`)
	for _, id := range []string{"2.0", "4.0"} {
		f, err := os.Open("testdata/61_match_better-analyze_job" + id + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		job := jobs[id]
		conds, sums := 0, 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if m := step.FindStringSubmatch(line); m != nil {
				e, err := Parse(m[2])
				if err != nil {
					t.Fatalf("job %s: parse %q: %v", id, m[2], err)
				}
				n := 0
				for _, mach := range machines {
					n += b2i(Eval(e, job, mach).IsTrue())
				}
				if strconv.Itoa(n) != m[1] {
					t.Errorf("job %s: %s holds on %d slots, HTCondor says %s", id, m[2], n, m[1])
				}
				conds++
			}
			if m := summary.FindStringSubmatch(line); m != nil {
				n := 0
				for _, mach := range machines {
					jobOK, machineOK := defaultEnv.MatchSides(job, mach)
					switch {
					case strings.HasPrefix(m[2], "are rejected"):
						n += b2i(!jobOK)
					case strings.HasPrefix(m[2], "reject your"):
						n += b2i(jobOK && !machineOK)
					default:
						n += b2i(jobOK && machineOK)
					}
				}
				if strconv.Itoa(n) != m[1] {
					t.Errorf("job %s: %d %s, HTCondor says %s", id, n, m[2], m[1])
				}
				sums++
			}
		}
		f.Close()
		if conds == 0 || sums != 3 {
			t.Fatalf("job %s: read %d conditions and %d summary lines", id, conds, sums)
		}
	}
}

// TestMatchConcurrent evaluates the same parsed ads from several goroutines
// (run with -race to check that evaluation shares no mutable state).
func TestMatchConcurrent(t *testing.T) {
	jobs := recordedJobs(t)
	machines, _ := flavorMachines(t)
	job, machine := jobs["2.0"], machines["flavor-ubuntu22-m1.large"]
	const workers, rounds = 8, 200
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < rounds; i++ {
				if !Match(job, machine) || !Eval(MustParse(`regexp("^ubu", TARGET.VMType)`), job, machine).IsTrue() {
					errs <- fmt.Errorf("round %d: no match", i)
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
