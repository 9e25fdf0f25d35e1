package localblob

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
)

// BenchmarkPut stores small objects under 256 prefixes, as a backup's
// chunks are (batched: no fsync per object), from several goroutines.
func BenchmarkPut(b *testing.B) {
	s, err := New(b.TempDir(), nil, BatchedSync("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte{1}, 4<<10)
	ctx := context.Background()
	var n atomic.Int64
	cpu := func() float64 {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return float64(ru.Utime.Nano() + ru.Stime.Nano())
	}
	began := cpu()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := fmt.Sprintf("%016x", n.Add(1))
			key := fmt.Sprintf("chunks/%s/%s", i[14:], i)
			if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric((cpu()-began)/float64(b.N), "cpu-ns/op")
}
