// Package topologies embeds the topology files of this folder, so that
// `troupe dev` runs the example saga from any directory. The YAML files are
// the source; this package only carries them into the binary.
package topologies

import _ "embed"

// Orders is topology/orders.yaml, the example order saga (README: The example saga).
//
//go:embed orders.yaml
var Orders []byte
