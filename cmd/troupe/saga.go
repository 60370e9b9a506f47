package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupehq/troupe/pkg/saga"
)

func newSagaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Ask the coordinator where saga instances are and why they ended",
		Long: `Reads saga instances from the coordinator's HTTP API (--api, TROUPE_API_URL).
An instance's id is its saga key (for the example saga, the orderId).
Statuses: RUNNING, COMPLETED, COMPENSATING, COMPENSATED (failed and undone),
FAILED (a compensation could not be done: an operator must act).`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "get ID",
		Short: "Print one instance as JSON: status, reason, completed and compensated steps, history",
		Example: `  troupe saga get order-42
  troupe saga get order-42 | jq .compensated`,
		Args: exactArgs(1, "the saga instance id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := apiGet(cmdContext(cmd), g.API, "/api/sagas/"+url.PathEscape(args[0]), &raw); err != nil {
				return err
			}
			var pretty strings.Builder
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			var v any
			if err := dec.Decode(&v); err != nil {
				return fmt.Errorf("decode answer of %s: %w", g.API, err)
			}
			enc := json.NewEncoder(&pretty)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v)
			_, err := io.WriteString(cmd.OutOrStdout(), pretty.String())
			return err
		},
	})
	var status string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List instances, optionally by status",
		Example: `  troupe saga list
  troupe saga list --status FAILED
  troupe saga list --status COMPENSATED --limit 500 --json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", strings.ToUpper(status))
			}
			q.Set("limit", fmt.Sprint(limit))
			var page saga.Page
			if err := apiGet(cmdContext(cmd), g.API, "/api/sagas?"+q.Encode(), &page); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(page)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tREASON\tCOMPLETED\tCOMPENSATED\tUPDATED")
			for _, in := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Status, dash(in.Reason),
					dash(strings.Join(in.Completed, ",")), dash(strings.Join(in.Compensated, ",")), in.UpdatedAt.Format(time.RFC3339))
			}
			tw.Flush()
			if page.Next != "" {
				fmt.Fprintf(out, "(more: raise --limit)\n")
			}
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "", "only instances with this status")
	list.Flags().IntVar(&limit, "limit", saga.DefaultLimit, fmt.Sprintf("at most this many (1-%d)", saga.MaxLimit))
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.AddCommand(list)
	cmd.AddCommand(&cobra.Command{
		Use:   "stats",
		Short: "Count instances by status",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st saga.Stats
			if err := apiGet(cmdContext(cmd), g.API, "/api/sagas/stats", &st); err != nil {
				return err
			}
			for _, s := range []saga.Status{saga.Running, saga.Completed, saga.Compensating, saga.Compensated, saga.Failed} {
				fmt.Fprintf(cmd.OutOrStdout(), "%-13s %d\n", s, st.ByStatus[s])
			}
			return nil
		},
	})
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// apiGet GETs base+path and decodes the JSON answer into v. Errors name the
// URL and the flag that sets it; API error bodies are passed on.
func apiGet(ctx context.Context, base, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	u := strings.TrimRight(base, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return usagef("bad API URL %q: %v (set --api or TROUPE_API_URL)", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the troupe API at %s: %w (is troupe dev or troupe run running? set --api or TROUPE_API_URL)", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest {
				return asUsage(errors.New(e.Error))
			}
			return fmt.Errorf("%s: %s", u, e.Error)
		}
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode answer of %s: %w", u, err)
	}
	return nil
}
