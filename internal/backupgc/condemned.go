package backupgc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
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
//	gc/<key id>/condemned/<generation>/<n>     records of 36 bytes (id, stored size), recordsPerPiece at most
//	gc/<key id>/condemned/<generation>/root    {"markedAt", "pieces", "count"}, written last
//
// Generation names start with the mark's time (UTC, sortable) and end with
// random bytes, so collectors on several servers never overwrite each
// other's lists.
const (
	condemnedDir    = "condemned/"
	rootName        = "root"
	idLen           = len(backuprepo.ChunkID{})
	recordLen       = idLen + 4
	recordsPerPiece = backuprepo.MaxPayload / recordLen
)

// condemnedChunk is a chunk a mark condemned, and its stored size (for the
// sweep's count of bytes freed).
type condemnedChunk struct {
	ID   backuprepo.ChunkID
	Size uint32
}

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

// writeGeneration stores cs as a new condemned list of repo's key.
func writeGeneration(ctx context.Context, repo *backuprepo.Repo, gen string, markedAt time.Time, cs []condemnedChunk) error {
	pieces := 0
	for start := 0; start < len(cs); start += recordsPerPiece {
		part := cs[start:min(len(cs), start+recordsPerPiece)]
		buf := make([]byte, 0, len(part)*recordLen)
		for _, c := range part {
			buf = binary.BigEndian.AppendUint32(append(buf, c.ID[:]...), c.Size)
		}
		if err := repo.PutGCObject(ctx, condemnedDir+gen+"/"+strconv.Itoa(pieces), buf); err != nil {
			return err
		}
		pieces++
	}
	doc, err := json.Marshal(generationRoot{MarkedAt: markedAt.UTC(), Pieces: pieces, Count: len(cs)})
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
		if err := json.Unmarshal(doc, &r); err != nil || r.Pieces < 0 || r.Count < 0 || r.Pieces > r.Count/recordsPerPiece+1 {
			continue
		}
		g.root = &r
	}
	return gens, nil
}

// readGeneration returns the chunks of a condemned list (all, or an
// error: a list read in part is not acted upon).
func readGeneration(ctx context.Context, repo *backuprepo.Repo, g *generation) ([]condemnedChunk, error) {
	cs := make([]condemnedChunk, 0, min(g.root.Count, recordsPerPiece))
	for i := range g.root.Pieces {
		buf, err := repo.GetGCObject(ctx, condemnedDir+g.name+"/"+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("condemned list %s: %w", g.name, err)
		}
		if len(buf)%recordLen != 0 {
			return nil, fmt.Errorf("condemned list %s: piece %d of %d bytes", g.name, i, len(buf))
		}
		for ; len(buf) > 0; buf = buf[recordLen:] {
			cs = append(cs, condemnedChunk{ID: backuprepo.ChunkID(buf[:idLen]), Size: binary.BigEndian.Uint32(buf[idLen:])})
		}
	}
	if len(cs) != g.root.Count {
		return nil, fmt.Errorf("condemned list %s: %d chunks, its root says %d", g.name, len(cs), g.root.Count)
	}
	return cs, nil
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
