//! [`Client`]: seeds, one connection per broker, the metadata cache, and the retry
//! loops every other handle (producer, consumer, admin) goes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use neo_protocol::api::{BROKER_SERVICE, MetadataRequest, MetadataResponse};
use neo_protocol::{CallOptions, ErrorCode, NeoClient};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::metadata::{LeaderLookup, MetadataCache};
use crate::retry::{Pace, Retry, RetryPolicy, pace_after};
use crate::suspects::{Suspects, is_connection_failure};

/// Whether `err` is the cluster refusing this client's credential or principal (or
/// throttling it: a rate limit, or the `connections` quota at the handshake): the error
/// to report (with its code and delay), not a reachability one.
fn refuses_access(err: &Error) -> bool {
    matches!(
        err.code(),
        Some(ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::Throttled)
    )
}

/// Default ping period of a client's broker connections (the server answers a ping
/// in its connection reader, whatever its handlers are doing).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Default number of silent ping periods after which a broker connection is dead.
pub const HEARTBEAT_MISSES_MAX: u32 = 3;

/// Every knob of a [`Client`], named, units last.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Settings of each broker connection (timeouts, TLS, auth token, frame size).
    /// Its reconnect attempts are kept low on purpose: the client's own retry loop
    /// (with metadata refreshes in between) decides what to try next.
    pub rpc: neo_protocol::ClientConfig,
    /// Retry of retriable failures (backoff, attempt limit, overall deadline).
    pub retry: RetryPolicy,
    /// Metadata older than this is refreshed before its next use (the periodic
    /// refresh; errors that suggest it is wrong refresh it sooner).
    pub metadata_age_max: Duration,
    /// Bound on one call that does not set its own (metadata, admin).
    pub request_timeout: Duration,
    /// Bound on cached broker connections; beyond it the client refuses new brokers
    /// (a cluster larger than this is a configuration error, not a surprise).
    pub connections_max: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        let rpc = neo_protocol::ClientConfig {
            reconnect_attempts_max: 1,
            connect_timeout: Duration::from_secs(3),
            // A frozen or unreachable broker (a paused process, a cut link, a dead
            // container whose address no longer answers) is abandoned after
            // `HEARTBEAT_INTERVAL * HEARTBEAT_MISSES_MAX` of silence (judged at each
            // ping tick: 1.5-2 s after its last frame), not after
            // the 7 s or more of a produce call's timeout; its calls fail with
            // `PeerUnresponsive` and are retried at the new leader. A ping costs one
            // small frame per silent interval on an idle connection only.
            heartbeat_interval: HEARTBEAT_INTERVAL,
            heartbeat_misses_max: HEARTBEAT_MISSES_MAX,
            ..neo_protocol::ClientConfig::default()
        };
        ClientConfig {
            rpc,
            retry: RetryPolicy::default(),
            metadata_age_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            connections_max: 1024,
        }
    }
}

/// A handle on a Neo cluster. Cheap to clone: clones share connections and metadata.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    seeds: Vec<String>,
    config: ClientConfig,
    /// One multiplexed connection per broker address, opened on first use.
    connections: Mutex<HashMap<String, NeoClient>>,
    metadata: Mutex<MetadataCache>,
    /// Single-flight metadata refreshes.
    refreshing: tokio::sync::Mutex<()>,
    /// The handshake token of connections opened from now on: `config.rpc.auth_token`
    /// at first, then the last one [`Client::reauthenticate`] had accepted.
    token: Mutex<Option<Vec<u8>>>,
    /// Brokers whose connection just failed: asked last by broker-agnostic calls.
    suspects: Mutex<Suspects>,
}

impl Client {
    /// Connect to a cluster through `seeds` (`host:port` each): fetches metadata from
    /// the first seed that answers. Fails if none does (after the retry policy).
    pub async fn connect<S: AsRef<str>>(seeds: &[S]) -> Result<Client> {
        Client::connect_with(seeds, ClientConfig::default()).await
    }

    /// [`Client::connect`] with explicit configuration.
    pub async fn connect_with<S: AsRef<str>>(seeds: &[S], config: ClientConfig) -> Result<Client> {
        let seeds: Vec<String> = seeds
            .iter()
            .map(|s| s.as_ref().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if seeds.is_empty() {
            return Err(Error::InvalidArgument("no seed address given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                seeds,
                connections: Mutex::new(HashMap::new()),
                metadata: Mutex::new(MetadataCache::new()),
                refreshing: tokio::sync::Mutex::new(()),
                token: Mutex::new(config.rpc.auth_token.clone()),
                suspects: Mutex::new(Suspects::default()),
                config,
            }),
        };
        let mut retry = Retry::new(client.inner.config.retry);
        loop {
            match client.refresh_metadata().await {
                Ok(()) => return Ok(client),
                Err(err) => retry.failed(err).await?,
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The seed addresses.
    pub fn seeds(&self) -> &[String] {
        &self.inner.seeds
    }

    /// A snapshot of the metadata cache, refreshed first if stale or old.
    pub async fn metadata(&self) -> Result<MetadataCache> {
        self.ensure_fresh().await?;
        Ok(self.cache().clone())
    }

    /// Fetch metadata now (all topics), from the controller, a known broker or a seed,
    /// whichever answers first. Concurrent callers share one refresh. If that answer
    /// leaves partitions without a leader (a leader cut off from its followers gives
    /// none for its partitions; a broker may also lag), the other candidates are asked
    /// too and fill those in ([`MetadataCache::merge_leaders`]), until none is left.
    ///
    /// If no candidate answers and one of them refused the credential
    /// (`Unauthenticated`) or the principal (`PermissionDenied`), that refusal is the
    /// error (not retriable), so that callers see its code rather than
    /// [`Error::NoBrokerReachable`].
    pub async fn refresh_metadata(&self) -> Result<()> {
        let seen = self.cache().generation();
        let _single = self.inner.refreshing.lock().await;
        if self.cache().generation() != seen {
            return Ok(()); // someone refreshed while we waited
        }
        let mut tried = Vec::new();
        let mut last = String::from("no address to try");
        let mut applied = false;
        let mut refused: Option<Error> = None;
        for address in self.candidates(None) {
            let request = MetadataRequest { topics: Vec::new() };
            let result: Result<MetadataResponse> = self
                .call_at(
                    &address,
                    "metadata",
                    &request,
                    self.inner.config.request_timeout,
                )
                .await;
            match result {
                Ok(response) => {
                    let mut cache = self.cache();
                    if applied {
                        cache.merge_leaders(&response);
                    } else {
                        cache.apply(&response, &[], Instant::now());
                        applied = true;
                    }
                    if cache.leaderless() == 0 {
                        return Ok(());
                    }
                }
                Err(err) => {
                    tracing::debug!(%address, error = %err, "metadata request failed");
                    last = err.to_string();
                    tried.push(address);
                    if refused.is_none() && refuses_access(&err) {
                        refused = Some(err);
                    }
                }
            }
        }
        if applied {
            return Ok(());
        }
        Err(refused.unwrap_or(Error::NoBrokerReachable { tried, last }))
    }

    /// The partition count of `topic` (from the cache; refreshed once if unknown).
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        {
            // The common case (fresh cache, known topic) under one lock.
            let cache = self.cache();
            if !cache.needs_refresh(Instant::now(), self.inner.config.metadata_age_max)
                && let Some(n) = cache.partition_count(topic)
            {
                return Ok(n);
            }
        }
        self.ensure_fresh().await?;
        if let Some(n) = self.cache().partition_count(topic) {
            return Ok(n);
        }
        self.cache().mark_stale();
        self.refresh_metadata().await?;
        let count = self.cache().partition_count(topic);
        match count {
            Some(n) => Ok(n),
            None => Err(self.missing_topic(topic).await),
        }
    }

    /// Why `topic` is not in the metadata: with security on, the cluster lists only
    /// the topics the principal may see, so the broker is asked by name, and a
    /// `PermissionDenied` naming the topic and operation is the answer; else
    /// `UnknownTopic`.
    async fn missing_topic(&self, topic: &str) -> Error {
        let request = MetadataRequest {
            topics: vec![topic.to_string()],
        };
        match self
            .call_any::<_, MetadataResponse>("metadata", &request)
            .await
        {
            Err(err) if err.code() == Some(ErrorCode::PermissionDenied) => err,
            _ => Error::UnknownTopic {
                topic: topic.to_string(),
            },
        }
    }

    /// The leader address of a partition, refreshing metadata as needed.
    pub(crate) async fn leader_address(&self, topic: &str, partition: u32) -> Result<String> {
        self.ensure_fresh().await?;
        let mut lookup = self.cache().leader(topic, partition);
        if lookup == LeaderLookup::UnknownTopic {
            // Maybe created after our last refresh.
            self.cache().mark_stale();
            self.refresh_metadata().await?;
            lookup = self.cache().leader(topic, partition);
        }
        match lookup {
            LeaderLookup::Address(address) => Ok(address),
            LeaderLookup::UnknownTopic => Err(self.missing_topic(topic).await),
            LeaderLookup::UnknownPartition { count } => Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count,
            }),
            LeaderLookup::NoLeader => {
                self.cache().mark_stale();
                Err(Error::LeaderNotAvailable {
                    topic: topic.to_string(),
                    partition,
                })
            }
        }
    }

    /// One call to a partition's leader, no retry; updates the cache from the error.
    pub(crate) async fn call_partition_once<Req, Resp>(
        &self,
        topic: &str,
        partition: u32,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let address = self.leader_address(topic, partition).await?;
        let result = self.call_at(&address, method, request, timeout).await;
        if let Err(err) = &result {
            self.observe_error(topic, partition, err);
        }
        result
    }

    /// A call to a partition's leader with the retry policy (NotLeader, connection
    /// failures, no leader yet, busy: retried after a backoff and a metadata update).
    pub(crate) async fn call_partition<Req, Resp>(
        &self,
        topic: &str,
        partition: u32,
        method: &str,
        request: &Req,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let mut retry = Retry::new(policy);
        let mut immediate_in_a_row = 0;
        loop {
            let timeout = timeout.min(retry.remaining().max(Duration::from_millis(1)));
            let address = match self.leader_address(topic, partition).await {
                Ok(address) => address,
                Err(err) => {
                    // No leader known (an election): `Pace::Failover` for that error.
                    let pace = pace_after(&err, "", None, immediate_in_a_row);
                    immediate_in_a_row = 0;
                    retry.failed_paced(err, pace).await?;
                    continue;
                }
            };
            match self.call_at(&address, method, request, timeout).await {
                Ok(resp) => return Ok(resp),
                Err(err) => {
                    self.observe_error(topic, partition, &err);
                    let pace = pace_after(
                        &err,
                        &address,
                        self.cached_leader(topic, partition).as_deref(),
                        immediate_in_a_row,
                    );
                    immediate_in_a_row = if pace == Pace::Now {
                        immediate_in_a_row + 1
                    } else {
                        0
                    };
                    retry.failed_paced(err, pace).await?;
                }
            }
        }
    }

    /// The leader address the cache names for a partition, without refreshing it:
    /// `None` when the cache is stale (an error marked it) or names no leader.
    fn cached_leader(&self, topic: &str, partition: u32) -> Option<String> {
        let cache = self.cache();
        if cache.needs_refresh(Instant::now(), self.inner.config.metadata_age_max) {
            return None;
        }
        match cache.leader(topic, partition) {
            LeaderLookup::Address(address) => Some(address),
            _ => None,
        }
    }

    /// A call any broker can answer (admin): tried on the controller first, then the
    /// other brokers and seeds; a `NotLeader` hint is followed; retried per policy.
    pub(crate) async fn call_any<Req, Resp>(&self, method: &str, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let mut retry = Retry::new(self.inner.config.retry);
        let mut hint: Option<String> = None;
        loop {
            let mut last = None;
            for address in self.candidates(hint.take()) {
                match self
                    .call_at(&address, method, request, self.inner.config.request_timeout)
                    .await
                {
                    Ok(resp) => return Ok(resp),
                    Err(err) if err.is_retriable() => {
                        if let Some(h) = err.leader_hint() {
                            hint = Some(h.to_string());
                        }
                        if err.invalidates_metadata() {
                            self.cache().mark_stale();
                        }
                        let follow = hint.is_some();
                        last = Some(err);
                        if follow {
                            break;
                        }
                    }
                    Err(err) => return Err(err),
                }
            }
            let err = last.unwrap_or_else(|| Error::NoBrokerReachable {
                tried: Vec::new(),
                last: "no address to try".into(),
            });
            retry.failed(err).await?;
            if self
                .cache()
                .needs_refresh(Instant::now(), self.inner.config.metadata_age_max)
            {
                let _ = self.refresh_metadata().await;
            }
        }
    }

    /// One call to the broker at `address`.
    pub(crate) async fn call_at<Req, Resp>(
        &self,
        address: &str,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let result: Result<Resp> = match self.connection(address).await {
            Ok(conn) => conn
                .call_with(
                    BROKER_SERVICE,
                    method,
                    request,
                    CallOptions::timeout(timeout),
                )
                .await
                .map_err(Error::from),
            Err(err) => Err(err),
        };
        if let Err(err) = &result
            && is_connection_failure(err)
        {
            self.suspects().mark(address, Instant::now());
        }
        result
    }

    /// Update the cache after a failed call to `topic`/`partition`'s leader.
    pub(crate) fn observe_error(&self, topic: &str, partition: u32, err: &Error) {
        let mut cache = self.cache();
        match err.leader_hint() {
            Some(address) if cache.apply_leader_hint(topic, partition, address) => {}
            _ if err.invalidates_metadata() => cache.mark_stale(),
            _ => {}
        }
    }

    /// The connection to `address`, opened on first use.
    async fn connection(&self, address: &str) -> Result<NeoClient> {
        if let Some(conn) = self.connections().get(address) {
            return Ok(conn.clone());
        }
        if self.connections().len() >= self.inner.config.connections_max {
            return Err(Error::InvalidArgument(format!(
                "more than connections_max = {} brokers",
                self.inner.config.connections_max
            )));
        }
        let mut rpc = self.inner.config.rpc.clone();
        rpc.auth_token = self.token().clone();
        let conn = NeoClient::connect(address.to_string(), rpc).await?;
        // Two callers may have dialled at once: keep the first, drop the other.
        Ok(self
            .connections()
            .entry(address.to_string())
            .or_insert(conn)
            .clone())
    }

    /// Addresses to try for a broker-agnostic call, without duplicates: a hint,
    /// the controller, the known brokers, then the seeds; but for the hint, those
    /// whose connection failed in the last [`crate::suspects::SUSPECT_FOR`] go last.
    fn candidates(&self, hint: Option<String>) -> Vec<String> {
        let mut rest: Vec<String> = Vec::new();
        {
            let cache = self.cache();
            let known = cache.brokers().into_iter().map(|b| b.address);
            for address in cache
                .controller_address()
                .into_iter()
                .chain(known)
                .chain(self.inner.seeds.iter().cloned())
            {
                if !rest.contains(&address) && hint.as_ref() != Some(&address) {
                    rest.push(address);
                }
            }
        }
        let rest = self.suspects().order(rest, Instant::now());
        hint.into_iter().chain(rest).collect()
    }

    fn suspects(&self) -> MutexGuard<'_, Suspects> {
        self.inner
            .suspects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn ensure_fresh(&self) -> Result<()> {
        let needs = self
            .cache()
            .needs_refresh(Instant::now(), self.inner.config.metadata_age_max);
        if needs {
            self.refresh_metadata().await?;
        }
        Ok(())
    }

    fn cache(&self) -> MutexGuard<'_, MetadataCache> {
        self.inner
            .metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Renew the credential of every open broker connection in place with `token` (a
    /// fresh JWT before the old one expires), without closing them: in-flight calls,
    /// consumers and producers carry on. The token must name the same principal as
    /// the one the connections were opened with: another principal is refused with
    /// `PrincipalMismatch`, a bad token with `Unauthenticated`; a refused token changes
    /// nothing (each connection keeps its credential until that expires). Once the
    /// token is accepted, connections opened later use it too. Each connection's
    /// renewal is bounded by its `call_timeout`.
    pub async fn reauthenticate(&self, token: impl Into<Vec<u8>>) -> Result<()> {
        let token: Vec<u8> = token.into();
        let open: Vec<NeoClient> = self.connections().values().cloned().collect();
        let renewals = open.iter().map(|conn| conn.reauthenticate(token.clone()));
        let results = futures::future::join_all(renewals).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(_) => {}
                // The cluster refuses the token: every node would; keep the old one.
                Err(err @ neo_protocol::Error::Rpc(_)) => return Err(err.into()),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        *self.token() = Some(token);
        match failure {
            // A connection that could not be reached: it redials with the new token.
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    fn token(&self) -> MutexGuard<'_, Option<Vec<u8>>> {
        self.inner.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<String, NeoClient>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
