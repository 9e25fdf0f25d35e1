package confine

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Holes stay holes: a file an environment or an image made sparse (a 1 TiB
// hole costs it nothing) must not cost the runner's disk its full size when
// copied or unpacked.

const sparseChunk = 64 << 10

// copySparse copies the regular file in to out, skipping in's holes
// (SEEK_DATA/SEEK_HOLE); where the file system can't say, it falls back to
// writeSparse.
func copySparse(out, in *os.File) error {
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	fd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err = writeSparse(out, in)
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.Copy(out, io.NewSectionReader(in, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}

// writeSparse copies r to out, seeking over blocks of zeros instead of
// writing them, and returns the number of bytes copied.
func writeSparse(out *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, sparseChunk)
	var n int64
	for {
		m, err := io.ReadFull(r, buf)
		if m > 0 {
			if allZero(buf[:m]) {
				if _, err := out.Seek(int64(m), io.SeekCurrent); err != nil {
					return n, err
				}
			} else if _, err := out.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, out.Truncate(n)
		}
		if err != nil {
			return n, err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
