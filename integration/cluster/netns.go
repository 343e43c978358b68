//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (/run/netns/NAME, as `ip netns add`
// makes it). Daemons run in it under Exec(); the calling process reaches
// into it with Do, DialContext, Listen and HTTPClient.
type Netns struct {
	Name   string
	client *http.Client // see HTTPClient
}

// NetnsSupport says why network namespaces cannot be made here (not root,
// no iproute2 or nsenter), or nil when they probably can; NewNetns has the
// last word.
func NetnsSupport() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	for _, c := range []string{"ip", "tc", "nsenter"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("no %s command", c)
		}
	}
	return nil
}

// NewNetns makes namespace name with its loopback up.
func NewNetns(name string) (*Netns, error) {
	if err := Sh("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n := &Netns{Name: name}
	n.client = &http.Client{Transport: &http.Transport{DialContext: n.DialContext, IdleConnTimeout: time.Minute}}
	if err := n.IP("link", "set", "lo", "up"); err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// Path is the namespace's bind mount, what setns(2) and nsenter take.
func (n *Netns) Path() string { return filepath.Join("/run/netns", n.Name) }

// Delete removes the namespace; its interfaces go with it once no process
// is left in it.
func (n *Netns) Delete() error {
	n.client.CloseIdleConnections()
	return Sh("ip", "netns", "del", n.Name)
}

// Exec is the command prefix that runs a program in the namespace. Unlike
// `ip netns exec`, nsenter leaves the mount namespace alone, so a FUSE
// mount made by a daemon in the namespace is visible to everyone.
func (n *Netns) Exec() []string { return []string{"nsenter", "--net=" + n.Path(), "--"} }

// IP runs `ip -n NAME ARGS`.
func (n *Netns) IP(args ...string) error {
	return Sh("ip", append([]string{"-n", n.Name}, args...)...)
}

// TC runs `tc -n NAME ARGS`.
func (n *Netns) TC(args ...string) error {
	return Sh("tc", append([]string{"-n", n.Name}, args...)...)
}

// Output runs a command in the namespace and returns its standard output.
func (n *Netns) Output(name string, args ...string) (string, error) {
	argv := append(n.Exec(), append([]string{name}, args...)...)
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return string(out), nil
}

// Sysctl sets a per-namespace sysctl, e.g. Sysctl("net.ipv4.tcp_rmem",
// "4096 131072 33554432").
func (n *Netns) Sysctl(key, value string) error {
	return n.Do(func() error {
		// /proc/sys/net is the namespace of the thread that opens it.
		p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(p, []byte(value+"\n"), 0); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, n.Name, err)
		}
		return nil
	})
}

// ReadSysctl reads a per-namespace sysctl.
func (n *Netns) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// Do runs f on an OS thread that has joined the namespace: sockets f
// opens belong to the namespace and stay there after f returns. The thread
// is never given back to the Go scheduler (it ends with its goroutine), so
// no other code runs in the namespace by accident.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked on purpose: see above
		fd, err := unix.Open(n.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", n.Path(), err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// DialContext dials from inside the namespace.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// HTTPClient reaches servers in the namespace, such as a daemon's API on
// the namespace's own 127.0.0.1. It is one client per namespace: a
// transport of its own per call would leave an idle connection open to
// the daemon for every call (a sampler makes one every 100 ms).
func (n *Netns) HTTPClient() *http.Client { return n.client }

// Veth joins namespaces a and b with a veth pair, aIf in a with address
// aCIDR and bIf in b with bCIDR (e.g. "198.18.0.1/24"), both up.
func Veth(a *Netns, aIf, aCIDR string, b *Netns, bIf, bCIDR string) error {
	if err := Sh("ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		return err
	}
	for _, s := range []struct {
		n        *Netns
		dev, pfx string
	}{{a, aIf, aCIDR}, {b, bIf, bCIDR}} {
		if err := s.n.IP("addr", "add", s.pfx, "dev", s.dev); err != nil {
			return err
		}
		if err := s.n.IP("link", "set", s.dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

// ShapeEgress caps what leaves dev at rate (tc syntax: "200mbit") with a
// tbf of burst bytes of tokens and a queue of limit bytes. The queue must
// hold a bandwidth-delay product or more, or tbf itself caps a TCP flow
// well under the rate on a long link.
func (n *Netns) ShapeEgress(dev, rate string, burst, limit int) error {
	return n.TC("qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
		"burst", strconv.Itoa(burst), "limit", strconv.Itoa(limit))
}

// Sh runs a command, returning its output in the error when it fails.
func Sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
