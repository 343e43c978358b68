package node

import "github.com/meshfs/meshfs/integration/testkit"

// testBS is the block size of the datasets node's tests build: small, so
// that a few KiB make datasets of many blocks and codewords.
const testBS = 4096

// randomBytes is testkit's, under the name node's tests have long used.
var randomBytes = testkit.RandomBytes
