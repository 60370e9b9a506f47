package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set at build time (make build does both):
// -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234". The commit
// falls back to the VCS stamp go build records (vcs.revision), which
// -buildvcs=false or a build outside the git checkout leave out.
var (
	version = "dev"
	commit  = ""
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print troupe's version and build information",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "troupe %s (commit %s, %s, %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// buildCommit is the commit the binary was built from: vcs.revision (short,
// "-dirty" when the tree had changes), else the -X main.commit value, else
// "unknown" with how to get it.
func buildCommit() string {
	var rev, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	switch {
	case rev != "":
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if modified == "true" {
			rev += "-dirty"
		}
		return rev
	case commit != "":
		return commit
	}
	return "unknown: built without VCS stamp (use make build, or go build -buildvcs=true in the git checkout)"
}
