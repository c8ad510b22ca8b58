//! [`CoordinatorLink`]: calls to a group's coordinator, which moves (the metadata
//! leader today; it changes on failover). The coordinator's address is found with
//! `find_coordinator` at any broker, cached, replaced by the hint of a
//! `NotCoordinator` answer, and forgotten after a connection error so that the next
//! call finds it again.

use std::time::Duration;

use neo_protocol::ErrorCode;
use neo_protocol::api::{FindCoordinatorRequest, FindCoordinatorResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::{Retry, RetryPolicy};

/// The way to one group's coordinator.
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    client: Client,
    group: String,
    /// The coordinator's client address, when known.
    address: Option<String>,
}

/// A local timeout, as the transport reports one (retriable).
pub(crate) fn timed_out(after: Duration) -> Error {
    Error::Transport(neo_protocol::Error::Timeout { after })
}

impl CoordinatorLink {
    pub(crate) fn new(client: Client, group: String) -> CoordinatorLink {
        CoordinatorLink {
            client,
            group,
            address: None,
        }
    }

    /// Ask any broker which node coordinates the group (client retry policy).
    pub(crate) async fn find(client: &Client, group: &str) -> Result<FindCoordinatorResponse> {
        let request = FindCoordinatorRequest {
            group: group.to_string(),
        };
        let resp: FindCoordinatorResponse = client.call_any("find_coordinator", &request).await?;
        if resp.address.trim().is_empty() {
            // No coordinator right now (an election): retriable, like NotCoordinator.
            return Err(Error::Broker(neo_protocol::RpcError::new(
                ErrorCode::NotCoordinator,
                format!("no coordinator for group {group:?} right now"),
            )));
        }
        Ok(resp)
    }

    /// The coordinator's address: cached, or found now.
    async fn address(&mut self) -> Result<String> {
        if let Some(address) = &self.address {
            return Ok(address.clone());
        }
        let found = CoordinatorLink::find(&self.client, &self.group).await?;
        self.address = Some(found.address.clone());
        Ok(found.address)
    }

    /// Forget or replace the cached address after a failed call.
    fn observe(&mut self, err: &Error) {
        if let Some(hint) = err.coordinator_hint() {
            self.address = Some(hint.to_string());
        } else if err.code() == Some(ErrorCode::NotCoordinator)
            || err.invalidates_metadata()
            || err.is_retriable()
        {
            self.address = None;
        }
    }

    /// One call to the coordinator, no retry, bounded by `timeout` (finding the
    /// coordinator included).
    pub(crate) async fn call_once<Req, Resp>(
        &mut self,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let attempt = async {
            let address = self.address().await?;
            self.client
                .call_at(&address, method, request, timeout)
                .await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(timeout)),
        };
        if let Err(err) = &result {
            self.observe(err);
        }
        result
    }

    /// A call to the coordinator, retried per `policy` on retriable errors (a moved
    /// coordinator, a dead connection, a timeout), each attempt bounded by `timeout`.
    pub(crate) async fn call<Req, Resp>(
        &mut self,
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
        loop {
            let timeout = timeout.min(retry.remaining().max(Duration::from_millis(1)));
            match self.call_once(method, request, timeout).await {
                Ok(resp) => return Ok(resp),
                Err(err) => retry.failed(err).await?,
            }
        }
    }
}
