package planner

import "testing"

// TestImagesNotReady: a VM type whose image the image matrix wants on a
// cloud but that is missing or still copying there is booted elsewhere,
// or waits, and the reason says why.
func TestImagesNotReady(t *testing.T) {
	el9 := func(idle int) Shape { s := testShape("a", 1, idle); s.Image = "el9"; return s }
	copying := func(c Cloud) Cloud {
		c.ImagesNotReady = map[string]string{"el9": "image el9 is copying to west (40%)"}
		return c
	}
	runCases(t, []planCase{
		{name: "image copying on the first cloud: booted on the next",
			s:     snap([]Cloud{copying(testCloud("west", 0)), testCloud("east", 1)}, []Shape{el9(1)}, nil),
			boots: "east/a/c1m2×1"},
		{name: "image missing everywhere: the jobs wait, saying why",
			s: snap([]Cloud{copying(testCloud("west", 0)), func() Cloud {
				c := testCloud("east", 1)
				c.ImagesNotReady = map[string]string{"el9": "image el9 missing on east: no site holds it"}
				return c
			}()}, []Shape{el9(2)}, nil),
			notes: []string{"2 idle jobs in 1 shapes wait; the most (2 of 1 cpu, 2048 MiB) because image el9 is copying to west (40%)"}},
		{name: "other images are not held back",
			s:     snap([]Cloud{copying(testCloud("west", 0))}, []Shape{testShape("a", 1, 1)}, nil),
			boots: "west/a/c1m2×1"},
	})
}
