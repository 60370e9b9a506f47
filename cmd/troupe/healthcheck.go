package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheckCmd is the container health check of an image without curl
// (deploy/Dockerfile's is distroless): GET a URL, exit 0 on a 2xx answer.
func newHealthcheckCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck URL",
		Short: "GET a URL and exit 0 on a 2xx answer (a container health check)",
		Long: `Sends GET URL and exits 0 when the answer is 2xx, 1 otherwise, printing the
status and the start of the body. For health checks in images that have no
curl, such as troupe's distroless image: a step's or coordinator's /readyz
(503 while it joins its group or restores state), or the registry's / (503
until it has read its topic). With troupe's token set (--auth-token-file or
TROUPE_AUTH_TOKEN) it sends it, as the registry behind a token requires.`,
		Example: `  troupe healthcheck http://127.0.0.1:8090/readyz
  troupe healthcheck http://127.0.0.1:8081/`,
		Args: exactArgs(1, "the URL to GET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			url := withScheme(args[0])
			ctx, cancel := context.WithTimeout(cmdContext(cmd), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return usagef("healthcheck %q: %v (give a URL such as http://127.0.0.1:8090/readyz)", args[0], err)
			}
			if tok := g.AuthToken(); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck %s: %w", url, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("healthcheck %s: %s: %s", url, resp.Status, body)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", url, resp.Status)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
