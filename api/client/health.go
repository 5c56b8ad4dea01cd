package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoal-project/shoal/api"
)

// cidQuery is the query of an action on one pin (cid) or on all ("").
func cidQuery(cid string, local bool) url.Values {
	q := url.Values{}
	if cid != "" {
		q.Set("cid", cid)
	}
	if local {
		q.Set("local", "true")
	}
	return q
}

// Verify re-hashes the stored parts of pin cid (all when cid is "") on the
// answering peer (local) or on every peer. It takes as long as reading
// the data.
func (c *Client) Verify(ctx context.Context, cid string, local bool) ([]api.VerifyResult, error) {
	var out []api.VerifyResult
	err := c.do(ctx, http.MethodPost, c.url(cidQuery(cid, local), "verify"), nil, "", &out)
	return out, err
}

// Recover retries the failed parts of pin cid (all when cid is "") at once.
func (c *Client) Recover(ctx context.Context, cid string, local bool) ([]api.TrackerReport, error) {
	var out []api.TrackerReport
	err := c.do(ctx, http.MethodPost, c.url(cidQuery(cid, local), "recover"), nil, "", &out)
	return out, err
}

// Sync makes the trackers walk the whole state and store now.
func (c *Client) Sync(ctx context.Context, local bool) ([]api.TrackerReport, error) {
	var out []api.TrackerReport
	err := c.do(ctx, http.MethodPost, c.url(cidQuery("", local), "sync"), nil, "", &out)
	return out, err
}

// Drain takes one step of moving peer id's parts to other peers.
func (c *Client) Drain(ctx context.Context, id string) (api.DrainProgress, error) {
	var out api.DrainProgress
	err := c.do(ctx, http.MethodPost, c.url(nil, "peers", id, "drain"), nil, "", &out)
	return out, err
}

// Rebalance takes one step of moving parts toward emptier peers; dryRun
// only plans; tolerance 0 is automatic.
func (c *Client) Rebalance(ctx context.Context, dryRun bool, tolerance int64) (api.RebalanceProgress, error) {
	q := url.Values{}
	if dryRun {
		q.Set("dry-run", "true")
	}
	if tolerance > 0 {
		q.Set("tolerance", strconv.FormatInt(tolerance, 10))
	}
	if dryRun && c.stale {
		q.Set("consistency", api.ConsistencyStale)
	}
	var out api.RebalanceProgress
	err := c.do(ctx, http.MethodPost, c.url(q, "rebalance"), nil, "", &out)
	return out, err
}
