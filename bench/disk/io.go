package main

import (
	"context"
	"os"
	"time"
)

// seqWrite writes n bytes to path in 1 MiB writes, fsyncs, and returns the
// throughput in MB/s (10^6 bytes), the fsync included.
func seqWrite(ctx context.Context, path string, n int64) (float64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7) // not all zeros
	}
	began := time.Now()
	for w := int64(0); w < n; w += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(n) / 1e6 / time.Since(began).Seconds(), nil
}

// fsyncLatency times n pairs of a 4 KiB append and an fsync.
func fsyncLatency(ctx context.Context, path string, n int) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	out := make([]time.Duration, 0, n)
	for range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		began := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(began))
	}
	return out, nil
}
