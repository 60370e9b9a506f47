package main

import (
	"bytes"
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

	"github.com/troupehq/troupe/pkg/auth"
	"github.com/troupehq/troupe/pkg/saga"
)

func newSagaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Ask the coordinator where saga instances are and why they ended",
		Long: `Reads saga instances from the coordinator's HTTP API (--api, TROUPE_API_URL).
An instance's id is its saga key (for the example saga, the orderId).
Statuses: RUNNING, COMPLETED, COMPENSATING, COMPENSATED (failed and undone),
FAILED (a compensation could not be done: an operator must act).

A saga begins only with its trigger event. An event of an id whose trigger
the coordinator has not seen starts nothing: it is an orphan, listed by
"troupe saga orphans" and counted by "troupe saga stats". If the trigger
comes within an hour, it adopts the orphans that followed from it (events
read early from another topic); the others stay orphans.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "get ID",
		Short: "Print one instance as JSON: status, reason, completed and compensated steps, history",
		Long: `Prints one instance as JSON, its fields in this order: id, saga, status,
reason, error, completed, compensated, startedAt, updatedAt, endedAt, traceId
(the saga's OpenTelemetry trace, when its trigger carried one or the
coordinator traces), pending, queue, deadLetters, history (each entry: type,
step, time, topic, partition, offset, note), orphans.`,
		Example: `  troupe saga get order-42
  troupe saga get order-42 | jq .compensated`,
		Args: exactArgs(1, "the saga instance id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := apiGet(cmdContext(cmd), g, "/api/sagas/"+url.PathEscape(args[0]), &raw); err != nil {
				return err
			}
			// Indent keeps the API's order of fields (a reader's, not
			// alphabetical as a map would print them).
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, raw, "", "  "); err != nil {
				return fmt.Errorf("decode answer of %s: %w", g.API, err)
			}
			pretty.WriteByte('\n')
			_, err := cmd.OutOrStdout().Write(pretty.Bytes())
			return err
		},
	})
	var status, reason, id, cursor string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List instances, newest first, optionally by status, reason or id",
		Long: `Lists instances newest first (by start time), a page at a time: past the
first page, pass the --cursor the previous page printed (with the same
filters). The filters combine: --status, --reason (the event that failed
the saga, as the topology's fails_on names it, or "timeout") and --id (a
part of the saga id).`,
		Example: `  troupe saga list
  troupe saga list --status FAILED
  troupe saga list --status COMPENSATED --reason PaymentDeclined
  troupe saga list --reason timeout --json
  troupe saga list --id order-17
  troupe saga list --limit 100 --cursor MTc2NDU3...`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", strings.ToUpper(status))
			}
			if reason != "" {
				q.Set("reason", reason)
			}
			if id != "" {
				q.Set("id", id)
			}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			q.Set("limit", fmt.Sprint(limit))
			var page saga.Page
			if err := apiGet(cmdContext(cmd), g, "/api/sagas?"+q.Encode(), &page); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(page)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tREASON\tCOMPLETED\tCOMPENSATED\tSTARTED\tUPDATED")
			for _, in := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Status, dash(in.Reason),
					dash(strings.Join(in.Completed, ",")), dash(strings.Join(in.Compensated, ",")),
					in.StartedAt.Format(time.RFC3339), in.UpdatedAt.Format(time.RFC3339))
			}
			tw.Flush()
			if page.Next != "" {
				fmt.Fprintf(out, "(more: add --cursor %s)\n", page.Next)
			}
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "", "only instances with this status (RUNNING, COMPLETED, COMPENSATING, COMPENSATED, FAILED)")
	list.Flags().StringVar(&reason, "reason", "", `only instances failed by this event (a fails_on type's short name) or by "timeout"`)
	list.Flags().StringVar(&id, "id", "", "only instances whose saga id contains this")
	list.Flags().IntVar(&limit, "limit", saga.DefaultLimit, fmt.Sprintf("at most this many (1-%d)", saga.MaxLimit))
	list.Flags().StringVar(&cursor, "cursor", "", "start after the previous page (the cursor it printed)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.AddCommand(list)
	cmd.AddCommand(newSagaOrphansCmd(g))
	cmd.AddCommand(&cobra.Command{
		Use:   "stats",
		Short: "Count instances by status, and the orphans (events that started no saga)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st saga.Stats
			if err := apiGet(cmdContext(cmd), g, "/api/sagas/stats", &st); err != nil {
				return err
			}
			for _, s := range []saga.Status{saga.Running, saga.Completed, saga.Compensating, saga.Compensated, saga.Failed} {
				fmt.Fprintf(cmd.OutOrStdout(), "%-13s %d\n", s, st.ByStatus[s])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%-13s %d  (events that started no saga: troupe saga orphans)\n", "orphans", st.Orphans)
			return nil
		},
	})
	return cmd
}

func newSagaOrphansCmd(g *globals) *cobra.Command {
	var cursor string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "orphans",
		Short: "List orphans: events of ids whose saga never started (no trigger seen)",
		Long: `Lists the orphans the coordinators keep: events of an instance id whose
trigger the coordinator has not seen. They started no saga (no deadline, no
compensation, no SagaEnded, not in the stats by status). Each shows the
event's type, its topic, partition and offset, who produced it (ce_source)
and when. An id's orphans are kept an hour (at most 16 of them); a trigger
that comes meanwhile adopts those that followed from it.

Common causes: a test or forged record, a producer that keys events by
another field than the saga key, or a trigger produced to another partition.`,
		Example: `  troupe saga orphans
  troupe saga orphans --json | jq -r '.items[].source' | sort | uniq -c`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page saga.OrphanPage
			if err := apiGet(cmdContext(cmd), g, "/api/orphans?"+q.Encode(), &page); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(page)
			}
			if len(page.Items) == 0 && cursor == "" {
				fmt.Fprintln(out, "no orphans: every event kept belongs to a saga that started")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tAT\tSOURCE\tTIME")
			for _, o := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s/%d@%d\t%s\t%s\n", o.ID, o.Type, o.Topic, o.Partition, o.Offset, dash(o.Source), o.Time.Format(time.RFC3339))
			}
			tw.Flush()
			if page.Next != "" {
				fmt.Fprintf(out, "(more: add --cursor %s)\n", page.Next)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", saga.DefaultLimit, fmt.Sprintf("at most this many (1-%d)", saga.MaxLimit))
	cmd.Flags().StringVar(&cursor, "cursor", "", "start after the previous page (the cursor it printed)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// apiGet GETs path of the API at --api, with the auth token, and decodes
// the JSON answer into v. Errors name the URL and the flag that sets it;
// API error bodies are passed on.
func apiGet(ctx context.Context, g *globals, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	base := g.API
	u := strings.TrimRight(base, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return usagef("bad API URL %q: %v (set --api or TROUPE_API_URL)", base, err)
	}
	token := g.AuthToken()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// GET /api/sagas/{id} redirects to the coordinator that holds the
	// instance, a peer with the same token: net/http drops the header on a
	// redirect to another host, so it is set again.
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the troupe API at %s: %w (is troupe dev or troupe run running? set --api or TROUPE_API_URL)", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", u, err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		fix := "the API requires a token: " + auth.Hint
		if token != "" {
			fix = "the API refused the token it was sent (" + auth.TokenFlag + " or " + auth.TokenEnv + "): set it to the server's token"
		}
		if resp.StatusCode == http.StatusForbidden {
			fix = "the token may not do this: " + auth.Hint + " to the write token"
		}
		return fmt.Errorf("%s answered %s: %s", u, resp.Status, fix)
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
