package build

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/solver/errdefs"
	digest "github.com/opencontainers/go-digest"

	coveerrdefs "github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// tailLines is how many lines of a failed step's output an error shows.
const tailLines = 20

// tailBytes bounds the output kept per step.
const tailBytes = 16 << 10

// progress records what a build's status stream said about each step:
// names, errors and the tail of their output, to explain a failure.
type progress struct {
	mu     sync.Mutex
	names  map[digest.Digest]string
	errs   map[digest.Digest]string
	order  []digest.Digest // vertices in the order they failed
	output map[digest.Digest][]byte
}

func newProgress() *progress {
	return &progress{
		names:  map[digest.Digest]string{},
		errs:   map[digest.Digest]string{},
		output: map[digest.Digest][]byte{},
	}
}

func (p *progress) record(s *bkclient.SolveStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range s.Vertexes {
		p.names[v.Digest] = v.Name
		if v.Error != "" {
			if _, seen := p.errs[v.Digest]; !seen {
				p.order = append(p.order, v.Digest)
			}
			p.errs[v.Digest] = v.Error
		}
	}
	for _, l := range s.Logs {
		out := append(p.output[l.Vertex], l.Data...)
		if len(out) > tailBytes {
			out = append([]byte(nil), out[len(out)-tailBytes:]...)
		}
		p.output[l.Vertex] = out
	}
}

// failedStep returns the name and output tail of the step that failed, if
// the status stream named one. Cancelled siblings ("context canceled") are
// passed over for the real failure.
func (p *progress) failedStep() (name, tail string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pick digest.Digest
	for _, d := range p.order {
		if pick == "" || strings.Contains(p.errs[pick], "context canceled") {
			pick = d
		}
	}
	if pick == "" {
		return "", "", false
	}
	return p.names[pick], lastLines(p.output[pick], tailLines), true
}

// buildError turns a solve error into a user-visible one: the failing step,
// its place in the Dockerfile and its last output lines, with its category
// (solveCategory).
func (p *progress) buildError(err error) error {
	var msg strings.Builder
	msg.WriteString("Dockerfile build failed")
	if srcs := errdefs.Sources(err); len(srcs) > 0 {
		// The innermost source is the Dockerfile instruction itself.
		s := srcs[len(srcs)-1]
		if s.Info != nil && len(s.Ranges) > 0 && s.Ranges[0].Start != nil {
			line := int(s.Ranges[0].Start.Line)
			fmt.Fprintf(&msg, " at %s:%d", s.Info.Filename, line)
			if text := sourceLine(s.Info.Data, line); text != "" {
				fmt.Fprintf(&msg, ": %s", text)
			}
		}
	}
	name, tail, ok := p.failedStep()
	if ok && name != "" {
		fmt.Fprintf(&msg, "\nstep: %s", name)
	}
	fmt.Fprintf(&msg, "\nerror: %s", cleanError(err))
	if tail != "" {
		fmt.Fprintf(&msg, "\noutput (last lines):\n%s", tail)
	}
	return usererr.Wrap(coveerrdefs.WithCategory(err, solveCategory(err)), "%s", msg.String())
}

// cleanError strips gRPC framing from a solve error's text.
func cleanError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "rpc error: code = Unknown desc = ")
	s = strings.TrimPrefix(s, "failed to solve: ")
	return s
}

func sourceLine(data []byte, line int) string {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	return strings.TrimSpace(lines[line-1])
}

// lastLines returns the last n lines of b, each indented.
func lastLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = "  " + strings.TrimRight(l, "\r")
	}
	return strings.Join(lines, "\n")
}
