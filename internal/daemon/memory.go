package daemon

import (
	"os"
	"runtime/debug"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/imagetrim"
)

// bigBatch is the size from which a batch counts as a start-up or re-list
// burst after which memory is handed back at once.
const bigBatch = 1000

// releaseMemory returns the heap freed by a burst to the kernel, and the
// pages of the program image the burst touched. Applying the full lease
// set at start-up (the listing, the backend's state, its listing of the
// kernel's routes and neighbours to reconcile) leaves tens of MiB of
// garbage that the runtime would otherwise give back only over minutes;
// and start-up runs code (every package's init, the first listing and
// programming) that never runs again but stays mapped. It costs one extra
// garbage collection of the live heap and a few thousand minor faults to
// map back the code still in use, a few milliseconds of CPU per burst,
// for a resident size that docs/SCALE.md (imagetrim) shows falling by about
// a quarter at scale.
func releaseMemory() {
	start := time.Now()
	debug.FreeOSMemory()
	res, err := imagetrim.Trim()
	if err != nil {
		klog.Warningf("could not release the program's start-up pages (harmless: only the resident size stays higher): %v", err)
	}
	klog.V(2).Infof("returned freed memory and %.1f MiB of program pages (%d mappings) to the kernel in %s",
		float64(res.Resident)/(1<<20), res.Mappings, time.Since(start))
}

// steadyGCPercent is the garbage collector's target once the node is ready:
// the heap grows to 1.1 times the live data before a collection, not twice.
// What a running node allocates is the 30 s reconcile's kernel dumps and
// the peer probes, garbage at once; at Go's default the heap, and with it
// the resident size, settles at twice the live data. A lower target trades
// a little CPU for resident memory; docs/SCALE.md ("GC target") has the
// figures for 50, 20 and 10. The start-up burst itself runs with Go's
// default of 100 for speed. A GOGC in the environment wins.
const steadyGCPercent = 10

func tightenGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(steadyGCPercent)
	}
}
