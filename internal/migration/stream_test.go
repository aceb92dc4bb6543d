package migration_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// A 2 GiB upload, generated on the fly by the fake product, streams through the
// machine into the recording importer with flat memory: nothing buffers the file.
func TestTwoGiBUploadStreamsWithFlatMemory(t *testing.T) {
	t.Parallel()
	const size = 2 << 30
	const budget = 64 << 20
	b := setup(t)
	ctx := ctxT(t, 5*time.Minute)
	m := b.machine(t, b.rec, nil, migration.Options{})
	const tid = "transfer-2gib"
	b.amp.sizes["s3/huge"] = size
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/huge", "final"))
	ref := b.queue.take()[0]

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peakInuse atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakInuse.Load() {
				peakInuse.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	err := m.Import(ctx, ref)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	growth := int64(peakInuse.Load()) - int64(before.HeapInuse)
	t.Logf("2 GiB import took %v (%.0f MiB/s); allocated %.1f MiB in total; peak heap in use grew by %.1f MiB",
		took, float64(size)/(1<<20)/took.Seconds(), float64(allocated)/(1<<20), float64(growth)/(1<<20))
	if allocated > budget {
		t.Errorf("allocated %d bytes while streaming 2 GiB, want < %d", allocated, budget)
	}
	if growth > budget {
		t.Errorf("peak heap in use grew by %d bytes, want < %d", growth, budget)
	}

	_, sum := digest(t, content("s3/huge", size))
	recs, err := b.rec.Records(ctx, tid)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records = %+v, %v", recs, err)
	}
	if recs[0].SizeBytes != size || recs[0].SHA256 != sum {
		t.Errorf("recorded %d bytes, sha256 %s; want %d, %s", recs[0].SizeBytes, recs[0].SHA256, size, sum)
	}
	us, err := m.Uploads(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	if us[0].State != migration.UploadImported || us[0].SizeBytes != size || us[0].SHA256 != sum {
		t.Errorf("upload = %+v", us[0])
	}
}
