// Package api is the wire contract of meshfs's REST API: the JSON bodies
// the server (package httpapi) sends and the CLI decodes, one definition
// for both so that they cannot drift apart. The shapes are Codex's
// (/api/codex/v1) plus meshfs's additions, which are marked as such; CIDs
// travel as text in base58btc, as Codex prints them.
//
// It depends on the standard library only, so that any client can use it
// without pulling in the node.
package api

import "time"

// Prefix is the root of every route but /metrics: Codex's. The server
// answers every route under StoragePrefix too, where Codex's successor,
// Logos Storage, moved its API.
const (
	Prefix        = "/api/codex/v1"
	StoragePrefix = "/api/storage/v1"
)

// Manifest is Codex's REST shape of a manifest, plus the erasure fields a
// protected dataset has.
type Manifest struct {
	TreeCID     string `json:"treeCid"`
	DatasetSize uint64 `json:"datasetSize"`
	BlockSize   uint64 `json:"blockSize"`
	Protected   bool   `json:"protected"`
	Filename    string `json:"filename,omitempty"`
	Mimetype    string `json:"mimetype,omitempty"`
	// Only for protected datasets, where DatasetSize counts the parity
	// too and OriginalDatasetSize is the file's own size.
	EcK                 int    `json:"ecK,omitempty"`
	EcM                 int    `json:"ecM,omitempty"`
	OriginalTreeCID     string `json:"originalTreeCid,omitempty"`
	OriginalDatasetSize uint64 `json:"originalDatasetSize,omitempty"`
}

// FileSize is the dataset's size as its user knows it: without parity.
func (m Manifest) FileSize() uint64 {
	if m.OriginalDatasetSize > 0 {
		return m.OriginalDatasetSize
	}
	return m.DatasetSize
}

// Content is one dataset: GET …/network/manifest's and POST …/network's
// answer.
type Content struct {
	CID      string   `json:"cid"`
	Manifest Manifest `json:"manifest"`
}

// Listed is one dataset of GET /data. Pinned is meshfs's addition
// (unpinned datasets are a cache that garbage collection may remove); a
// pointer because Codex sends none, which is not the same as false.
type Listed struct {
	Content
	Pinned *bool `json:"pinned,omitempty"`
}

// List is GET /data's answer.
type List struct {
	Content []Listed `json:"content"`
}

// Space is GET /space's answer.
type Space struct {
	TotalBlocks uint64 `json:"totalBlocks"`
	// QuotaMaxBytes is the quota, or without one (NoQuota) what the store
	// holds plus the room left on its file system: never 0, so that a UI
	// showing max - used shows what can still be stored.
	QuotaMaxBytes      uint64 `json:"quotaMaxBytes"`
	QuotaUsedBytes     uint64 `json:"quotaUsedBytes"`
	QuotaReservedBytes uint64 `json:"quotaReservedBytes"`
	// NoQuota says no quota is set (meshfs's addition).
	NoQuota bool `json:"noQuota,omitempty"`
}

// FetchProgress is a background fetch of a whole dataset: GET
// …/network/progress's answer and an entry of DebugInfo.Fetches (meshfs's
// addition).
type FetchProgress struct {
	CID string `json:"cid"`
	// DownloadID names the fetch, as POST …/network's answer does.
	DownloadID    uint64    `json:"downloadId"`
	TotalBlocks   uint64    `json:"totalBlocks"`
	FetchedBlocks uint64    `json:"fetchedBlocks"`
	Done          bool      `json:"done"`            // ended, well or not
	Error         string    `json:"error,omitempty"` // why it failed
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished,omitzero"`
}

// PinResult is POST /data/{cid}/pin's answer (meshfs's addition).
type PinResult struct {
	CID    string `json:"cid"`
	Pinned bool   `json:"pinned"`
	// Local: the manifest was held here when the dataset was pinned.
	Local bool `json:"local"`
	// Fetching: a background fetch brings in what is not held yet.
	Fetching bool `json:"fetching"`
}

// GCResult is POST /gc's answer (meshfs's addition).
type GCResult struct {
	DatasetsRemoved int    `json:"datasetsRemoved"`
	BytesFreed      uint64 `json:"bytesFreed"`
	// UnreferencedBytesFreed is the part of BytesFreed that no dataset
	// needed (what an interrupted upload or fetch left).
	UnreferencedBytesFreed uint64      `json:"unreferencedBytesFreed"`
	Removed                []Collected `json:"removed"`
}

// Collected is one dataset a collection removed.
type Collected struct {
	CID        string    `json:"cid"`
	Reason     string    `json:"reason"` // "expired" or "quota"
	Bytes      uint64    `json:"bytes"`
	LastAccess time.Time `json:"lastAccess"`
}

// DebugInfo is GET /debug/info's answer. Peers and Fetches are meshfs's
// additions, for `meshfs status`.
type DebugInfo struct {
	ID                string          `json:"id"`
	Addrs             []string        `json:"addrs"`
	Repo              string          `json:"repo"`
	AnnounceAddresses []string        `json:"announceAddresses"`
	Peers             []string        `json:"peers"`
	Fetches           []FetchProgress `json:"fetches"`
	Codex             Version         `json:"codex"`
	// SPR is the node's signed peer record (see SPR).
	SPR string `json:"spr"`
	// Table is the DHT's routing table, in Codex's shape.
	Table Table `json:"table"`
	// Bandwidth is the caps on the exchange's traffic (meshfs's addition).
	Bandwidth Bandwidth `json:"bandwidth"`
	// NAT is the node's reachability and relays (meshfs's addition).
	NAT NAT `json:"nat"`
	// Links says how each of Peers is reached (meshfs's addition).
	Links []PeerLink `json:"links"`
}

// NAT is how a node stands with the NATs between it and its peers.
type NAT struct {
	// Reachability is "public", "private" (behind a NAT: peers reach it
	// through its relays) or "unknown" (not judged, as on a LAN).
	Reachability string `json:"reachability"`
	// RelayAddrs are its addresses through the relays it holds a slot on.
	RelayAddrs []string `json:"relayAddrs"`
	// RelayService: it serves as a relay (once public).
	RelayService bool `json:"relayService"`
	// ReachableAddrs and UnreachableAddrs are its addresses that peers
	// dialled back (AutoNAT v2), and whether they got through.
	ReachableAddrs   []string `json:"reachableAddrs"`
	UnreachableAddrs []string `json:"unreachableAddrs"`
	// RelayLimitBytes and RelayLimitSeconds are what a meshfs relay lets
	// through one relayed connection.
	RelayLimitBytes   uint64 `json:"relayLimitBytes"`
	RelayLimitSeconds int    `json:"relayLimitSeconds"`
}

// PeerLink is one connected peer and how it is reached.
type PeerLink struct {
	ID string `json:"id"`
	// Connection is "direct" or "relayed".
	Connection string `json:"connection"`
	// ExchangeRelayed: blocks go to it through the relay, within the
	// relay's limits, for want of a direct connection.
	ExchangeRelayed bool `json:"exchangeRelayed,omitempty"`
}

// Bandwidth is the caps on the block exchange's traffic, bytes per second;
// 0 is no cap.
type Bandwidth struct {
	Up   int64 `json:"upBytesPerSecond"`
	Down int64 `json:"downBytesPerSecond"`
}

// SPR answers /spr: the node's addresses signed with its key, a libp2p
// signed envelope of a peer record as "spr:" and unpadded URL-safe base64,
// which is how Codex encodes its own.
type SPR struct {
	SPR string `json:"spr"`
}

// PeerID answers /peerid when JSON is asked for (the default).
type PeerID struct {
	ID string `json:"id"`
}

// Table is a DHT routing table: this node, and the peers it routes by.
type Table struct {
	LocalNode TableNode   `json:"localNode"`
	Nodes     []TableNode `json:"nodes"`
}

// TableNode is one peer of a routing table. NodeID is its place in the
// DHT's key space (hex), Address one it is known at, Seen whether it is
// connected now; Record is its signed peer record, known for this node
// only (libp2p's DHT does not keep its peers' records).
type TableNode struct {
	NodeID  string `json:"nodeId"`
	PeerID  string `json:"peerId"`
	Record  string `json:"record"`
	Address string `json:"address"`
	Seen    bool   `json:"seen"`
}

// Version is the server's build, in Codex's place for it.
type Version struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`
}

// Fetched is POST /data/{cid}/network's answer: the dataset, and the ID of
// its background download (Logos Storage's downloadId), for the routes
// that report and cancel it.
type Fetched struct {
	Content
	DownloadID uint64 `json:"downloadId"`
}

// DownloadProgress is GET /data/{cid}/network/progress/{downloadId}'s
// answer, in Logos Storage's shape: Active is false once the download
// ended (or was never started), and the counts are then left out. Bytes
// counts whole blocks fetched.
type DownloadProgress struct {
	Active   bool   `json:"active"`
	Received uint64 `json:"received,omitempty"`
	Total    uint64 `json:"total,omitempty"`
	Bytes    uint64 `json:"bytes,omitempty"`
}
