// Package tailbuf keeps the end of a stream whose length an environment
// controls: command output the runner reports, never all of it in memory.
package tailbuf

// Buffer keeps the last Max bytes written to it.
type Buffer struct {
	Max int
	buf []byte
}

// Write implements io.Writer; it never fails.
func (t *Buffer) Write(p []byte) (int, error) {
	if len(p) >= t.Max {
		t.buf = append(t.buf[:0], p[len(p)-t.Max:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns what is kept.
func (t *Buffer) String() string { return string(t.buf) }
