package diskquota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sysBlock is where the kernel lists block devices (a variable for tests).
var sysBlock = "/sys/block"

// Loop is one attached loop device and the file behind it.
type Loop struct {
	Device  string // /dev/loopN
	Backing string // the image's path; its file was removed if Deleted
	Deleted bool
}

// Loops lists the attached loop devices.
func Loops() ([]Loop, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	var out []Loop
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "loop", "backing_file"))
		if err != nil {
			continue // not attached
		}
		l := Loop{Device: "/dev/" + e.Name(), Backing: strings.TrimSuffix(string(b), "\n")}
		if p, ok := strings.CutSuffix(l.Backing, " (deleted)"); ok {
			l.Backing, l.Deleted = p, true
		}
		out = append(out, l)
	}
	return out, nil
}

// backingFile is the file behind loop device dev ("/dev/loopN").
func backingFile(dev string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// Detach detaches every loop device whose image is img (present or
// removed). A device still mounted is only marked to detach when it is
// unmounted, and reported as an error.
func Detach(img string) error { return detach(func(l Loop) bool { return l.Backing == img }) }

// DetachUnder detaches the loop devices of images below dir whose file was
// removed (what a runner killed in the middle of deleting an environment
// leaves), and returns the images it detached.
func DetachUnder(dir string) ([]string, error) {
	ls, err := Loops()
	if err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	var imgs []string
	for _, l := range ls {
		if l.Deleted && strings.HasPrefix(l.Backing, dir+"/") && !gone[l.Backing] {
			gone[l.Backing] = true
			imgs = append(imgs, l.Backing)
		}
	}
	if len(imgs) == 0 {
		return nil, nil
	}
	return imgs, detach(func(l Loop) bool { return l.Deleted && gone[l.Backing] })
}

func detach(match func(Loop) bool) error {
	ls, err := Loops()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range ls {
		if !match(l) {
			continue
		}
		if err := clearFd(l.Device); err != nil {
			errs = append(errs, fmt.Errorf("detach %s (%s): %w", l.Device, l.Backing, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// The kernel lets a device go when its last holder does, which after
	// an unmount may be a moment later (the file system's release of the
	// device can be deferred), and LOOP_CLR_FD on a device someone still
	// holds only marks it. Wait for it, a bounded time: one still there
	// then is held by someone (a mount namespace that kept a copy of the
	// mount) and detaches when they let go.
	deadline := time.Now().Add(detachWait)
	for {
		ls, err := Loops()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(ls, match)
		if i < 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop device %s (%s) is still in use", ls[i].Device, ls[i].Backing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detachWait bounds how long Detach waits for the kernel to let a loop
// device go.
const detachWait = 10 * time.Second

func clearFd(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENXIO) {
			return nil
		}
		return err
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) { // already detached
		return nil
	}
	return err
}
