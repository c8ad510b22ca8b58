//! Raft groups: the metadata term, replication and apply lags (from [`Gauges`]), and
//! the process-wide counters of `neo-raft` ([`neo_raft::stats`]).

use super::Gauges;
use super::scrape::Scrape;

impl Gauges {
    /// Adds one replica's Raft view to the lags: the apply lag of every replica, the
    /// followers' lags of a leader.
    pub(crate) fn note_raft(&mut self, m: &neo_raft::GroupMetrics) {
        let apply_lag = m
            .committed_index
            .unwrap_or(0)
            .saturating_sub(m.applied_index.unwrap_or(0));
        self.apply_lag = self.apply_lag.max(apply_lag);
        let last = m.last_log_index.unwrap_or(0);
        for (follower, matched) in &m.matched {
            let lag = last.saturating_sub(matched.unwrap_or(0));
            let max = self.follower_lag.entry(*follower).or_default();
            *max = (*max).max(lag);
        }
    }
}

pub(crate) fn render(s: &mut Scrape, g: &Gauges) {
    let st = neo_raft::stats();
    s.gauge(
        "neo_raft_metadata_term",
        "Term of the metadata group's replica on this node",
        g.metadata_term,
    );
    s.gauges(
        "neo_raft_follower_lag_entries",
        "Largest, over the groups led here, of the leader's last log index minus the follower's matched index, by follower node id",
        g.follower_lag
            .iter()
            .map(|(node, lag)| (vec![("follower", node.to_string())], *lag)),
    );
    s.gauge(
        "neo_raft_apply_lag_entries",
        "Largest, over the groups hosted here, of committed minus applied entries",
        g.apply_lag,
    );
    s.counter(
        "neo_raft_leader_changes",
        "Leader changes (to another node or to none) seen by the groups hosted here",
        st.leader_changes(),
    );
    s.counter(
        "neo_raft_elections_started",
        "Elections this node started (a replica here voted for itself in a newer term), all groups",
        st.elections_started(),
    );
    s.gauge(
        "neo_raft_proposals_pending",
        "Proposals (record batches, commands) submitted to Raft here and not answered yet",
        st.proposals_pending(),
    );
    s.counter(
        "neo_raft_snapshots_sent",
        "Whole snapshots this node sent to followers",
        st.snapshots_sent(),
    );
}
