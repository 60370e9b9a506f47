//go:build !unix

package runner

import "os"

// flock is not implemented here: the data dir is not locked (Pebble's own
// lock still stops a second process at the first step store).
func flock(*os.File) error { return nil }
