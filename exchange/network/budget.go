package network

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// ErrOverBudget is wrapped when an inbound message could not get memory
// within ReadTimeout: the node's budget for messages being read (libp2p's
// resource manager, exchange/p2p) was full all that while.
var ErrOverBudget = fmt.Errorf("exchange: no memory for an inbound message")

// streamBudget takes the memory of a stream's inbound messages from the
// stream's resource scope, so that libp2p's resource manager bounds them per
// peer and in total (the exchange protocol's limits). When the budget is
// full the reader waits for room rather than failing at once: meanwhile it
// reads nothing, so the peer's flow-control window fills and it stops
// sending; only after ReadTimeout with no room is the stream reset.
type streamBudget struct {
	st      network.Stream
	wait    time.Duration
	waiting func() // told once per wait: a limit reached
}

// budgetPoll is how often a waiting reader asks again: room comes back
// when another stream's message is decoded, of which it is not told.
const budgetPoll = 10 * time.Millisecond

func (b *streamBudget) Reserve(n int) error {
	err := b.st.Scope().ReserveMemory(n, network.ReservationPriorityAlways)
	if err == nil {
		return nil
	}
	b.waiting()
	deadline := time.Now().Add(b.wait)
	tick := time.NewTicker(budgetPoll)
	defer tick.Stop()
	for range tick.C {
		if err = b.st.Scope().ReserveMemory(n, network.ReservationPriorityAlways); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
	}
	return fmt.Errorf("%w: %d bytes for %s: %w", ErrOverBudget, n, b.wait, err)
}

func (b *streamBudget) Release(n int) {
	if n > 0 {
		b.st.Scope().ReleaseMemory(n)
	}
}
