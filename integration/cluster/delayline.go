package cluster

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Offloads of a TUN device (linux/if_tun.h): the kernel may hand it, and
// take from it, packets with partial checksums and TCP segments of up to
// 64 KiB to be cut into MTU-sized ones (GSO), each behind a
// virtio_net_hdr.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// openTUN creates TUN device name (layer 3, no packet-info header) and
// returns its file: a read takes one IP packet the kernel sent out of the
// device, a write hands one to the kernel as if it arrived on it. The
// device is not persistent: it goes away when the file is closed.
//
// With gso, each packet comes with a virtio_net_hdr and may be a TCP
// segment of up to 64 KiB that the receiving kernel treats as the
// coalesced run of MTU-sized packets it stands for (as GRO would have
// made of them). The delay line passes the header through unchanged, so
// two such devices carry the same bytes at a fraction of the syscalls: on
// a 2-core machine the relay would otherwise take a good part of a core
// from the processes it measures.
func openTUN(name string, gso bool) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if gso {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if gso {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TUNSETOFFLOAD %s: %w", name, err)
		}
	}
	// Non-blocking, so reads wait in the Go poller and Close ends them.
	return os.NewFile(uintptr(fd), name), nil
}

// DelayLine joins two TUN devices as the two ends of one long link: every
// packet read from one end is written to the other oneWay later, in the
// order it came. The round trip across it is 2×oneWay plus what the two
// kernels add; bandwidth is left to a qdisc on each end (tbf). Netem,
// which would do this in the kernel, is missing from some kernels; and a
// relay that ends TCP connections would hide the delay from the sender.
type DelayLine struct {
	oneWay  time.Duration
	ends    [2]*os.File
	wg      sync.WaitGroup
	packets atomic.Uint64
	bytes   atomic.Uint64
	dropped atomic.Uint64 // queue full: only if the writer falls far behind
	late    atomic.Int64  // worst lateness of a write past its due time, ns
	lateSum atomic.Int64  // total lateness, ns (mean: lateSum/packets)
}

type packet struct {
	b   *[]byte
	n   int
	due time.Time
}

// queuePackets bounds each direction's queue: 16384 packets are 24 MiB or
// more, some 20 times the bandwidth-delay product of 25 ms at 200 Mbit/s.
const queuePackets = 16384

// Buffers for packets: MTU-sized ones (and ACKs), and GSO segments.
const smallPacket, largePacket = 2048, 65536 + 64

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallPacket); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largePacket); return &b }}
)

func startDelayLine(a, b *os.File, oneWay time.Duration) *DelayLine {
	d := &DelayLine{oneWay: oneWay, ends: [2]*os.File{a, b}}
	d.wg.Add(2)
	go d.pump(a, b)
	go d.pump(b, a)
	return d
}

func (d *DelayLine) pump(src, dst *os.File) {
	defer d.wg.Done()
	q := make(chan packet, queuePackets)
	go func() {
		defer close(q)
		scratch := make([]byte, largePacket)
		for {
			n, err := src.Read(scratch)
			if err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				// e.g. EAGAIN races, or the device briefly down; a
				// lasting error must not spin a core the bench measures.
				time.Sleep(time.Millisecond)
				continue
			}
			due := time.Now().Add(d.oneWay)
			pool := &smallPool
			if n > smallPacket {
				pool = &largePool
			}
			bp := pool.Get().(*[]byte)
			copy(*bp, scratch[:n])
			d.bytes.Add(uint64(n))
			select {
			case q <- packet{bp, n, due}:
				d.packets.Add(1)
			default:
				d.dropped.Add(1)
				pool.Put(bp)
			}
		}
	}()
	for p := range q {
		if w := time.Until(p.due); w > 0 {
			time.Sleep(w)
		}
		late := int64(time.Since(p.due))
		d.lateSum.Add(late)
		// Both directions' pumps record the worst: keep the larger.
		for cur := d.late.Load(); late > cur && !d.late.CompareAndSwap(cur, late); cur = d.late.Load() {
		}
		dst.Write((*p.b)[:p.n]) // a packet the kernel refuses is lost, as on a wire
		if len(*p.b) == smallPacket {
			smallPool.Put(p.b)
		} else {
			largePool.Put(p.b)
		}
	}
}

// DelayStats is what a delay line has moved: packets, bytes, packets
// dropped because its queue was full, and how late its writes were past
// their due time (the worst, and the mean).
type DelayStats struct {
	Packets, Bytes, Dropped uint64
	WorstLate, MeanLate     time.Duration
}

// Stats reports what the line has moved so far.
func (d *DelayLine) Stats() DelayStats {
	s := DelayStats{Packets: d.packets.Load(), Bytes: d.bytes.Load(), Dropped: d.dropped.Load(), WorstLate: time.Duration(d.late.Load())}
	if s.Packets > 0 {
		s.MeanLate = time.Duration(d.lateSum.Load() / int64(s.Packets))
	}
	return s
}

// tuns numbers the TUN devices this process makes, for unique names.
var tuns atomic.Int32

// NewDelayLine joins namespaces a and b by a point-to-point link with
// addresses aAddr and bAddr, each end's egress shaped to rate by tbf
// (burst and limit in bytes), every packet held oneWay on the way. It needs
// /dev/net/tun. Close removes the devices.
func NewDelayLine(a, b *Netns, aAddr, bAddr, rate string, burst, limit int, oneWay time.Duration) (*DelayLine, error) {
	var ends [2]*os.File
	closeAll := func() {
		for _, f := range ends {
			if f != nil {
				f.Close()
			}
		}
	}
	for i, ns := range []*Netns{a, b} {
		name := fmt.Sprintf("mft%d%c%d", os.Getpid()%100000, 'a'+i, tuns.Add(1)%100)
		f, err := openTUN(name, true)
		if err != nil {
			closeAll()
			return nil, err
		}
		ends[i] = f
		local, peer := aAddr, bAddr
		if i == 1 {
			local, peer = bAddr, aAddr
		}
		for _, step := range [][]string{
			{"ip", "link", "set", name, "txqueuelen", "4096", "netns", ns.Name},
			{"ip", "-n", ns.Name, "addr", "add", local, "peer", peer, "dev", name},
			{"ip", "-n", ns.Name, "link", "set", name, "up"},
		} {
			if err := Sh(step[0], step[1:]...); err != nil {
				closeAll()
				return nil, err
			}
		}
		if err := ns.ShapeEgress(name, rate, burst, limit); err != nil {
			closeAll()
			return nil, fmt.Errorf("tbf: %w", err)
		}
	}
	return startDelayLine(ends[0], ends[1], oneWay), nil
}

// Close closes both devices (removing them) and waits for the pumps.
func (d *DelayLine) Close() {
	for _, f := range d.ends {
		f.Close()
	}
	d.wg.Wait()
}
