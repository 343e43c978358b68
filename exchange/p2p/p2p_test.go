package p2p

import (
	"bufio"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/integration/testkit"
)

const (
	loopTCP  = "/ip4/127.0.0.1/tcp/0"
	loopQUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
	echoProt = protocol.ID("/meshfs/test/echo/1.0.0")
)

func testKey(tb testing.TB) crypto.PrivKey {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newTestHost starts a host on loopback ephemeral ports, closed at the end
// of the test.
func newTestHost(tb testing.TB, listen []string, bootstrap ...peer.AddrInfo) *Host {
	tb.Helper()
	if listen == nil {
		listen = []string{loopTCP, loopQUIC}
	}
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	h, err := New(ctx, Config{Key: testKey(tb), Listen: listen, Bootstrap: bootstrap, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return h
}

// onlyAddrs keeps the addresses of ai that use the protocol code.
func onlyAddrs(ai peer.AddrInfo, code int) peer.AddrInfo {
	var keep []ma.Multiaddr
	for _, a := range ai.Addrs {
		if _, err := a.ValueForProtocol(code); err == nil {
			keep = append(keep, a)
		}
	}
	return peer.AddrInfo{ID: ai.ID, Addrs: keep}
}

func echoHandler(s network.Stream) {
	defer s.Close()
	_, _ = io.Copy(s, s)
}

func TestPeerIDFromKey(t *testing.T) {
	key := testKey(t)
	want, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(t.Context(), Config{Key: key, Listen: []string{loopTCP}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.ID() != want || h.Host().ID() != want {
		t.Fatalf("peer ID %s, want %s", h.ID(), want)
	}
}

func TestNoKey(t *testing.T) {
	if _, err := New(t.Context(), Config{Listen: []string{loopTCP}}); err == nil {
		t.Fatal("New without a key succeeded")
	}
}

func TestAddrsCarryPeerID(t *testing.T) {
	h := newTestHost(t, nil)
	addrs := h.Addrs()
	var tcp, quic bool
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if ai.ID != h.ID() {
			t.Fatalf("%s: peer %s, want %s", a, ai.ID, h.ID())
		}
		if !strings.HasSuffix(a.String(), "/p2p/"+h.ID().String()) {
			t.Fatalf("%s does not end in /p2p/<id>", a)
		}
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			tcp = true
		}
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			quic = true
		}
	}
	if !tcp || !quic {
		t.Fatalf("addrs %v: want both a TCP and a QUIC address", addrs)
	}
}

func TestBootstrapAndStream(t *testing.T) {
	for _, tc := range []struct {
		name     string
		code     int
		security string
	}{
		{"tcp", ma.P_TCP, "/tls/1.0.0"},
		{"quic", ma.P_QUIC_V1, ""}, // QUIC brings its own TLS 1.3
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestHost(t, nil)
			a.Host().SetStreamHandler(echoProt, echoHandler)
			// b knows a only through its bootstrap list, on one transport.
			b := newTestHost(t, nil, onlyAddrs(a.AddrInfo(), tc.code))
			if got := b.Host().Network().Connectedness(a.ID()); got != network.Connected {
				t.Fatalf("after New, b→a connectedness %v, want connected", got)
			}

			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			// Both DHTs learn of each other from the bootstrap connection.
			if err := b.WaitRouting(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.WaitRouting(ctx); err != nil {
				t.Fatal(err)
			}

			s, err := b.Host().NewStream(ctx, a.ID(), echoProt)
			if err != nil {
				t.Fatalf("NewStream: %v", err)
			}
			defer s.Close()
			if tc.security != "" {
				if got := s.Conn().ConnState().Security; string(got) != tc.security {
					t.Errorf("security %q, want %q (TLS must be preferred)", got, tc.security)
				}
			}
			msg := "hello over " + tc.name + "\n"
			if _, err := io.WriteString(s, msg); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := bufio.NewReader(s).ReadString('\n')
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if got != msg {
				t.Fatalf("echo %q, want %q", got, msg)
			}
		})
	}
}

func TestUnreachableBootstrapIsNotFatal(t *testing.T) {
	// A peer that does not exist at an address that refuses connections.
	id, err := peer.IDFromPrivateKey(testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ghost := peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}}
	h := newTestHost(t, []string{loopTCP}, ghost)
	if h.Host().Network().Connectedness(ghost.ID) == network.Connected {
		t.Fatal("connected to a peer that cannot exist")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := h.WaitRouting(ctx); err == nil {
		t.Fatal("WaitRouting succeeded with no peers")
	}
}

// BenchmarkStreamThroughput is the transport ceiling: the most one libp2p
// stream between two hosts on this machine can carry, writing 1 MiB at a
// time. Block-exchange benchmarks compare against it.
//
//	go test -run '^$' -bench StreamThroughput ./exchange/p2p/
func BenchmarkStreamThroughput(b *testing.B) {
	b.Run("tcp-tls-yamux", func(b *testing.B) { benchThroughput(b, loopTCP, "/tls/1.0.0") })
	b.Run("quic", func(b *testing.B) { benchThroughput(b, loopQUIC, "") })
}

func benchThroughput(b *testing.B, listen, security string) {
	const (
		chunk = 1 << 20
		total = 256 << 20
		proto = protocol.ID("/meshfs/test/sink/1.0.0")
	)
	a := newTestHost(b, []string{listen})
	c := newTestHost(b, []string{listen}, a.AddrInfo())
	// The sink drains the stream and acknowledges with one byte, so the
	// clock stops only when every byte has arrived.
	a.Host().SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		if _, err := io.Copy(io.Discard, s); err != nil {
			_ = s.Reset()
			return
		}
		_, _ = s.Write([]byte{1})
	})
	buf := make([]byte, chunk)
	ctx := b.Context()

	b.SetBytes(total)
	clock := testkit.StartCPUClock(b)
	for range b.N {
		s, err := c.Host().NewStream(ctx, a.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		if security != "" && string(s.Conn().ConnState().Security) != security {
			b.Fatalf("security %q, want %q", s.Conn().ConnState().Security, security)
		}
		for sent := 0; sent < total; sent += chunk {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.CloseWrite(); err != nil {
			b.Fatal(err)
		}
		var ack [1]byte
		if _, err := io.ReadFull(s, ack[:]); err != nil {
			b.Fatalf("ack: %v", err)
		}
		_ = s.Close()
	}
	clock.Report(total >> 20)
}

func TestLimitConfig(t *testing.T) {
	c := limitConfig().ToPartialLimitConfig()
	// yamux grows a stream's receive window to 16 MiB; a peer moving data
	// on a few streams at once must be able to reserve several of them.
	const window = 16 << 20
	for name, l := range map[string]int64{
		"peer":          c.PeerDefault.Memory.Build(0),
		"protocol":      c.ProtocolDefault.Memory.Build(0),
		"protocol-peer": c.ProtocolPeerDefault.Memory.Build(0),
	} {
		if l < 8*window {
			t.Errorf("%s memory limit %d MiB, want at least %d MiB", name, l>>20, 8*window>>20)
		}
	}
	if sys := c.System.Conns.Build(0); sys <= connHighWater {
		t.Errorf("system connection limit %d, want above the high water mark %d", sys, connHighWater)
	}
	if sys, peer := c.System.Memory.Build(0), c.PeerDefault.Memory.Build(0); peer >= sys {
		t.Errorf("one peer may use %d of %d bytes: the system ceiling must stay", peer, sys)
	}
}

// The block exchange has budgets of its own for the messages it reads:
// one peer's fit four of the largest messages, and all peers' together
// are bounded below the system's ceiling.
func TestExchangeMemoryBudget(t *testing.T) {
	c := limitConfig().ToPartialLimitConfig()
	perPeer := c.ProtocolPeer[message.ProtocolID].Memory.Build(0)
	total := c.Protocol[message.ProtocolID].Memory.Build(0)
	if perPeer < 4*message.MaxMessageSize {
		t.Errorf("exchange memory per peer %d MiB; want room for four %d MiB messages", perPeer>>20, message.MaxMessageSize>>20)
	}
	if sys := c.System.Memory.Build(0); total <= perPeer || total >= sys {
		t.Errorf("exchange memory in total %d MiB; want above one peer's %d MiB and below the system's %d MiB", total>>20, perPeer>>20, sys>>20)
	}
}

// TreatAsPublic's range arithmetic: a named range takes the listed ranges
// within it off the lists, and refuses to split one.
func TestDropWithin(t *testing.T) {
	parse := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	listed := []*net.IPNet{parse("10.0.0.0/8"), parse("198.18.0.0/15"), parse("fc00::/7")}
	kept, err := dropWithin(listed, parse("198.18.0.0/15"))
	if err != nil || len(kept) != 2 || kept[0].String() != "10.0.0.0/8" || kept[1].String() != "fc00::/7" {
		t.Errorf("198.18.0.0/15: kept %v, %v; want 10.0.0.0/8 and fc00::/7", kept, err)
	}
	if kept, err = dropWithin(listed, parse("0.0.0.0/0")); err != nil || len(kept) != 1 {
		t.Errorf("0.0.0.0/0: kept %v, %v; want only the IPv6 range", kept, err)
	}
	_, err = dropWithin(listed, parse("10.1.0.0/16"))
	if err == nil || err.Error() != "10.1.0.0/16 is part of 10.0.0.0/8, which libp2p counts as not public: name all of it" {
		t.Errorf("10.1.0.0/16: %v; want a refusal naming 10.0.0.0/8", err)
	}
}
