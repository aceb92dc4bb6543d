package product

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestOpenDataStreamsLargeFilesInFlatMemory downloads a 512 MiB generated
// file through OpenData and checks every block arrives, in order, while the
// heap stays flat: the body is streamed, never buffered.
func TestOpenDataStreamsLargeFilesInFlatMemory(t *testing.T) {
	const (
		block  = 64 << 10
		blocks = 8192 // 512 MiB
		total  = int64(block) * blocks
	)
	pattern := make([]byte, block)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range pattern {
		pattern[i] = byte(r.UintN(256))
	}
	// Block i is the pattern with i in its first 8 bytes, so that a lost,
	// repeated or reordered block is detected.
	s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(total, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		buf := bytes.Clone(pattern)
		for i := range uint64(blocks) {
			binary.LittleEndian.PutUint64(buf, i)
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	c, b := setupAMP(t, "/wiki")
	b.product.SetHandler(presignHandler(s3, "big", "sig"))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := before.HeapInuse

	start := time.Now()
	rc, err := c.OpenData(t.Context(), ampClientKey, "big")
	if err != nil {
		t.Fatalf("OpenData: %v", err)
	}
	defer rc.Close()
	buf := make([]byte, block)
	var ms runtime.MemStats
	for i := range uint64(blocks) {
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if got := binary.LittleEndian.Uint64(buf); got != i || !bytes.Equal(buf[8:], pattern[8:]) {
			t.Fatalf("block %d corrupt (header %d)", i, got)
		}
		if i%1024 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if n, err := rc.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the last block: %d bytes, %v; want EOF", n, err)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)

	growth := int64(peak) - int64(before.HeapInuse)
	t.Logf("streamed %d MiB in %s: %.0f MiB/s; heap in use %d KiB before, peak growth %d KiB; allocated %d KiB in total",
		total>>20, elapsed.Round(time.Millisecond), float64(total)/(1<<20)/elapsed.Seconds(),
		before.HeapInuse>>10, growth>>10, (ms.TotalAlloc-before.TotalAlloc)>>10)
	if growth > 16<<20 {
		t.Errorf("heap grew by %d MiB while streaming %d MiB: the body is being buffered", growth>>20, total>>20)
	}
}
