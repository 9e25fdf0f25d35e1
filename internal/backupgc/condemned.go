package backupgc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// A condemned list (one "generation") is what a mark found: chunks of one
// organization that no manifest referenced and that were older than the
// grace. It is stored sealed under the organization's key, so nobody
// without the key can make a sweep delete anything:
//
//	gc/<key id>/condemned/<generation>/<n>     ids, 32 bytes each, idsPerPiece at most
//	gc/<key id>/condemned/<generation>/root    {"markedAt", "pieces", "count"}, written last
//
// Generation names start with the mark's time (UTC, sortable) and end with
// random bytes, so collectors on several servers never overwrite each
// other's lists.
const (
	condemnedDir = "condemned/"
	rootName     = "root"
	idsPerPiece  = backuprepo.MaxPayload / len(backuprepo.ChunkID{})
)

type generationRoot struct {
	MarkedAt time.Time `json:"markedAt"`
	Pieces   int       `json:"pieces"`
	Count    int       `json:"count"`
}

func newGenerationName(t time.Time) string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return t.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(rnd[:])
}

// writeGeneration stores ids as a new condemned list of repo's key.
func writeGeneration(ctx context.Context, repo *backuprepo.Repo, gen string, markedAt time.Time, ids []backuprepo.ChunkID) error {
	pieces := 0
	for start := 0; start < len(ids); start += idsPerPiece {
		part := ids[start:min(len(ids), start+idsPerPiece)]
		buf := make([]byte, 0, len(part)*len(backuprepo.ChunkID{}))
		for _, id := range part {
			buf = append(buf, id[:]...)
		}
		if err := repo.PutGCObject(ctx, condemnedDir+gen+"/"+strconv.Itoa(pieces), buf); err != nil {
			return err
		}
		pieces++
	}
	doc, err := json.Marshal(generationRoot{MarkedAt: markedAt.UTC(), Pieces: pieces, Count: len(ids)})
	if err != nil {
		return err
	}
	return repo.PutGCObject(ctx, condemnedDir+gen+"/"+rootName, doc)
}

// generation is a condemned list found in the store.
type generation struct {
	name    string
	root    *generationRoot // nil: no root (being written, or its writer crashed)
	newest  time.Time       // newest object's time (storage clock)
	objects []string        // its keys
}

// listGenerations returns repo's condemned lists, oldest first.
func listGenerations(ctx context.Context, repo *backuprepo.Repo) ([]*generation, error) {
	prefix := repo.GCKey(condemnedDir)
	var gens []*generation
	for info, err := range repo.Store().List(ctx, prefix) {
		if err != nil {
			return nil, fmt.Errorf("list condemned chunks: %w", err)
		}
		name, _, ok := strings.Cut(strings.TrimPrefix(info.Key, prefix), "/")
		if !ok {
			continue
		}
		if len(gens) == 0 || gens[len(gens)-1].name != name {
			gens = append(gens, &generation{name: name})
		}
		g := gens[len(gens)-1]
		g.objects = append(g.objects, info.Key)
		if info.ModTime.After(g.newest) {
			g.newest = info.ModTime
		}
	}
	for _, g := range gens {
		doc, err := repo.GetGCObject(ctx, condemnedDir+g.name+"/"+rootName)
		if blob.IsNotFound(err) {
			continue
		}
		if err != nil {
			if backuprepo.IsCorrupt(err) {
				continue // not ours: never acted upon; removed with its directory
			}
			return nil, err
		}
		var r generationRoot
		if err := json.Unmarshal(doc, &r); err != nil || r.Pieces < 0 || r.Count < 0 || r.Pieces > r.Count/idsPerPiece+1 {
			continue
		}
		g.root = &r
	}
	return gens, nil
}

// readGeneration returns the ids of a condemned list (all, or an error:
// a list read in part is not acted upon).
func readGeneration(ctx context.Context, repo *backuprepo.Repo, g *generation) ([]backuprepo.ChunkID, error) {
	ids := make([]backuprepo.ChunkID, 0, g.root.Count)
	for i := range g.root.Pieces {
		buf, err := repo.GetGCObject(ctx, condemnedDir+g.name+"/"+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("condemned list %s: %w", g.name, err)
		}
		if len(buf)%len(backuprepo.ChunkID{}) != 0 {
			return nil, fmt.Errorf("condemned list %s: piece %d of %d bytes", g.name, i, len(buf))
		}
		for ; len(buf) > 0; buf = buf[len(backuprepo.ChunkID{}):] {
			ids = append(ids, backuprepo.ChunkID(buf[:len(backuprepo.ChunkID{})]))
		}
	}
	if len(ids) != g.root.Count {
		return nil, fmt.Errorf("condemned list %s: %d ids, its root says %d", g.name, len(ids), g.root.Count)
	}
	return ids, nil
}

// deleteGeneration removes a condemned list: the root first, so that a
// crash leaves a list without root, which is never acted upon.
func deleteGeneration(ctx context.Context, repo *backuprepo.Repo, g *generation) error {
	rootKey := repo.GCKey(condemnedDir + g.name + "/" + rootName)
	if err := repo.Store().Delete(ctx, rootKey); err != nil {
		return err
	}
	for _, k := range g.objects {
		if k == rootKey {
			continue
		}
		if err := repo.Store().Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
