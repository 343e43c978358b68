package message

import "errors"

// MaxMessageSize is the default bound on one framed message body, enforced
// by Reader before it allocates anything and by WriteMessage before it
// sends. Codex allows 100 MiB (MaxMessageSize in blockexchange/protobuf/
// message.nim); we use less because every open stream may hold one message
// in memory. 16 MiB still carries a useful batch: a 64 KiB block (Codex's
// default block size) costs about 64 KiB + 2 KiB on the wire — its CID, its
// address and a merkle proof of at most 40 × 36 bytes — so one message
// holds some 250 such deliveries, far more than the engine needs in flight
// per peer to keep a link busy. Senders split larger batches.
const MaxMessageSize = 16 << 20

// Bounds the decoder enforces on every message, whatever its framing, so
// that a hostile peer cannot make us allocate far more than it sent or hand
// the engine unbounded work in one message. Each is well above what an
// honest meshfs or Codex node sends in one message.
const (
	// MaxWantEntries bounds the entries of one want list. Codex sends a
	// dataset's wants in batches; a full want list of 8192 entries is
	// already ~400 KiB on the wire.
	MaxWantEntries = 8192
	// MaxDeliveries bounds the blocks in one message (~ MaxMessageSize
	// divided by the smallest useful block size of 16 KiB).
	MaxDeliveries = 1024
	// MaxPresences bounds the have/don't-have answers in one message: one
	// per want entry at most.
	MaxPresences = 8192
	// MaxBlockDataSize bounds one delivered block. Codex caps blocks at
	// 100 MiB (MaxBlockSize); meshfs blocks are 64 KiB by default and never
	// above 64 MiB. A Reader's maxSize is usually the tighter bound.
	MaxBlockDataSize = 64 << 20
	// MaxProofSize bounds an encoded merkle proof. A proof of a tree of
	// 2^40 leaves (merkle.MaxLeaves) is under 1.5 KiB; 64 KiB leaves room
	// for other hash functions without letting a proof be a data channel.
	MaxProofSize = 64 << 10
	// MaxPriceSize is the size of a UInt256, the type of Codex's price.
	MaxPriceSize = 32
)

var (
	// ErrInvalidMessage is wrapped by every error Unmarshal (and so
	// Reader.ReadMessage) returns for bytes that are not a valid message.
	// A peer that sends one is misbehaving.
	ErrInvalidMessage = errors.New("invalid block-exchange message")
	// ErrLimitExceeded is wrapped, with ErrInvalidMessage, when a message
	// exceeds one of the decoder's bounds (MaxWantEntries and friends); the
	// error text names the bound.
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrMessageTooLarge: a frame's length prefix announces more than the
	// Reader's maxSize, or WriteMessage was given a message larger than
	// MaxMessageSize. The Reader has not consumed the body, so the stream
	// is out of step and must be reset.
	ErrMessageTooLarge = errors.New("block-exchange message too large")
)
