package backupgc

import (
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/blob/s3blob/s3test"
)

// startS3 starts versitygw on loopback for the test and returns a function
// giving each caller a store on a bucket of its own.
func startS3(t *testing.T) func(t *testing.T) blob.Store {
	srv := s3test.Start(t)
	return func(t *testing.T) blob.Store {
		cfg := srv.Config(srv.Bucket(t), "pre/")
		cfg.ListPage = 7
		s, err := s3blob.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// The collector on S3-compatible storage (versitygw): what it relies on
// (listings in key order, page by page; 13-byte range reads; modification
// times; idempotent deletes) behaves as on a directory.
func TestGCOnS3(t *testing.T) {
	newS3 := startS3(t)
	for name, f := range map[string]func(*testing.T, blob.Store){
		"RemovesOnlyUnreferencedOld": testRemovesOnlyUnreferencedOld,
		"ConcurrentWriterKeeps":      testConcurrentWriterKeeps,
		"WriterAfterSweepRefused":    testWriterAfterSweepRefused,
		"OtherOrganizationUntouched": testOtherOrganizationUntouched,
		"ForeignObjectsLeft":         testForeignObjectsLeft,
		"RemovesDeadPacks":           testRemovesDeadPacks,
		"CondemnedPackReused":        testCondemnedPackReused,
		"RepacksPartlyDeadPacks":     testRepacksPartlyDeadPacks,
	} {
		t.Run(name, func(t *testing.T) { f(t, newS3(t)) })
	}
}
