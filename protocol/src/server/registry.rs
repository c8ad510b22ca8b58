//! The service registry: services and methods described with [`ServiceBuilder`] and
//! [`MethodBuilder`], their handlers, and the table that maps wire ids to them.
//!
//! Ids are assigned in registration order: service ids from 1 (0 is the built-in
//! `neo.system` service), method ids from 1 within each service. Clients learn the table
//! through `neo.system/describe` (service 0, method 1) and then call by id; the
//! [`crate::NeoClient`] does this on its own when called by name.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::server::outbox::Outbox;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result, RpcError};
use crate::frame::{Frame, Kind};
use crate::server::context::RequestContext;

/// Id of the built-in service that describes the registry.
pub const SYSTEM_SERVICE_ID: u16 = 0;
/// Name of the built-in service.
pub const SYSTEM_SERVICE_NAME: &str = "neo.system";
/// `neo.system/describe`: empty request, [`RegistryTable`] response.
pub const DESCRIBE_METHOD_ID: u16 = 1;
/// Bound on services per server and methods per service: ids are `u16` and the
/// describe table must fit in a frame.
pub const SERVICES_MAX: usize = 1024;
/// See [`SERVICES_MAX`].
pub const METHODS_PER_SERVICE_MAX: usize = 1024;

type SyncFn = dyn Fn(&RequestContext, Bytes) -> Result<Bytes, RpcError> + Send + Sync;
type AsyncFn =
    dyn Fn(RequestContext, Bytes) -> BoxFuture<'static, Result<Bytes, RpcError>> + Send + Sync;
type EventFn = dyn Fn(RequestContext, Bytes, EventSink) -> BoxFuture<'static, Result<(), RpcError>>
    + Send
    + Sync;

/// A method's handler, type-erased to bytes in, bytes out.
#[derive(Clone)]
pub(crate) enum Handler {
    /// Runs inline on the connection's reader task: no spawn, no timeout.
    Sync(Arc<SyncFn>),
    /// Spawned as a task, bounded by the method's timeout, cancellable.
    Async(Arc<AsyncFn>),
    /// Spawned as a task that pushes events until it returns or is cancelled.
    Events(Arc<EventFn>),
}

fn encode_body<T: Serialize>(value: &T) -> Result<Bytes, RpcError> {
    qiss::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| RpcError::internal(format!("response does not encode: {err}")))
}

/// Decodes a request body. `Bytes` fields of the request (`qiss::bytes`) become slices
/// of `body`, itself a slice of the connection's read buffer: a produced batch is not
/// copied on its way to the handler.
fn decode_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, RpcError> {
    qiss::from_bytes(body).map_err(RpcError::from)
}

/// Describes one method: its name, the names of its input and output types (for the
/// describe table and docs) and its timeout. Finish it with one of the handler methods.
#[derive(Debug, Clone)]
pub struct MethodBuilder {
    name: String,
    input: String,
    output: String,
    timeout: Option<Duration>,
}

impl MethodBuilder {
    /// A method called `name`.
    pub fn new(name: impl Into<String>) -> MethodBuilder {
        MethodBuilder {
            name: name.into(),
            input: String::new(),
            output: String::new(),
            timeout: None,
        }
    }

    /// The input type's name (informational).
    pub fn input(mut self, type_name: impl Into<String>) -> MethodBuilder {
        self.input = type_name.into();
        self
    }

    /// The output (or event) type's name (informational).
    pub fn output(mut self, type_name: impl Into<String>) -> MethodBuilder {
        self.output = type_name.into();
        self
    }

    /// How long an async handler may run before the caller gets `Timeout`. Without it,
    /// the server's `request_timeout_default` applies. Sync handlers run inline and are
    /// not bounded; event streams are bounded only by cancellation.
    pub fn timeout(mut self, timeout: Duration) -> MethodBuilder {
        self.timeout = Some(timeout);
        self
    }

    fn finish(self, handler: Handler) -> Method {
        Method {
            builder: self,
            handler,
        }
    }

    /// A typed synchronous handler. It runs inline on the connection's task, so it must
    /// be quick and must not block; use an async handler for anything slow.
    pub fn sync_handler<Req, Resp, F>(self, f: F) -> Method
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        self.sync_handler_with_context(move |_ctx, req| f(req))
    }

    /// A typed synchronous handler that also sees the [`RequestContext`].
    pub fn sync_handler_with_context<Req, Resp, F>(self, f: F) -> Method
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(&RequestContext, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        self.raw_sync_handler(move |ctx, body| encode_body(&f(ctx, decode_body(&body)?)?))
    }

    /// A typed asynchronous handler (spawned, bounded by the method timeout,
    /// cancellable).
    pub fn async_handler<Req, Resp, F, Fut>(self, f: F) -> Method
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.async_handler_with_context(move |_ctx, req| f(req))
    }

    /// A typed asynchronous handler that also sees the [`RequestContext`].
    pub fn async_handler_with_context<Req, Resp, F, Fut>(self, f: F) -> Method
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.raw_async_handler(move |ctx, body| {
            let f = Arc::clone(&f);
            async move {
                let req = decode_body(&body)?;
                encode_body(&f(ctx, req).await?)
            }
        })
    }

    /// A synchronous handler over raw body bytes (no Qiss): for proxies, echo services
    /// and bodies that are already encoded (record batches).
    pub fn raw_sync_handler<F>(self, f: F) -> Method
    where
        F: Fn(&RequestContext, Bytes) -> Result<Bytes, RpcError> + Send + Sync + 'static,
    {
        self.finish(Handler::Sync(Arc::new(f)))
    }

    /// An asynchronous handler over raw body bytes.
    pub fn raw_async_handler<F, Fut>(self, f: F) -> Method
    where
        F: Fn(RequestContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
    {
        self.finish(Handler::Async(Arc::new(move |ctx, body| {
            Box::pin(f(ctx, body))
        })))
    }

    /// A server-push stream: the client's request opens a subscription, the handler
    /// pushes events through the [`EventSink`] and returns to end the stream (`Ok`
    /// sends an empty `Response`, `Err` an `Error`). Cancelling the subscription aborts
    /// the handler.
    pub fn event_handler<Req, F, Fut>(self, f: F) -> Method
    where
        Req: DeserializeOwned + Send + 'static,
        F: Fn(RequestContext, Req, EventSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.finish(Handler::Events(Arc::new(move |ctx, body, sink| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let req = decode_body(&body)?;
                f(ctx, req, sink).await
            })
        })))
    }
}

/// A method with its handler, ready to add to a [`ServiceBuilder`].
pub struct Method {
    builder: MethodBuilder,
    handler: Handler,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// Describes one service: name (unique per server), version, namespace and methods.
#[derive(Debug)]
pub struct ServiceBuilder {
    name: String,
    version: String,
    namespace: String,
    methods: Vec<Method>,
}

impl ServiceBuilder {
    /// A service called `name`; clients call it by this name.
    pub fn new(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder {
            name: name.into(),
            version: String::new(),
            namespace: String::new(),
            methods: Vec::new(),
        }
    }

    /// The service's version (informational).
    pub fn version(mut self, version: impl Into<String>) -> ServiceBuilder {
        self.version = version.into();
        self
    }

    /// The service's namespace (informational, e.g. `neo.example`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> ServiceBuilder {
        self.namespace = namespace.into();
        self
    }

    /// Add a method (ids follow the order of `method` calls, from 1).
    pub fn method(mut self, method: Method) -> ServiceBuilder {
        self.methods.push(method);
        self
    }
}

/// Pushes events of one subscription to the client.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Outbox,
    service_id: u16,
    method_id: u16,
    correlation_id: u64,
}

impl EventSink {
    pub(crate) fn new(
        tx: Outbox,
        service_id: u16,
        method_id: u16,
        correlation_id: u64,
    ) -> EventSink {
        EventSink {
            tx,
            service_id,
            method_id,
            correlation_id,
        }
    }

    /// Send one Qiss-encoded event. Waits while the connection's outbound queue is full
    /// (`outbound_queue_frames_max` frames or `outbound_queue_bytes_max` bytes not yet
    /// written: backpressure); fails with `Cancelled` once the connection is gone.
    pub async fn send<T: Serialize + ?Sized>(&self, event: &T) -> Result<(), RpcError> {
        let body = qiss::to_vec(event)
            .map_err(|err| RpcError::internal(format!("event does not encode: {err}")))?;
        self.send_raw(Bytes::from(body)).await
    }

    /// Send one event body as is.
    pub async fn send_raw(&self, body: Bytes) -> Result<(), RpcError> {
        let frame = Frame {
            kind: Kind::Event,
            service_id: self.service_id,
            method_id: self.method_id,
            correlation_id: self.correlation_id,
            body,
        };
        self.tx
            .send(frame)
            .await
            .map_err(|_| RpcError::new(ErrorCode::Cancelled, "connection closed"))
    }

    /// Whether the connection is gone (further sends fail).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// One method as the registry table describes it (body of `describe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodDescriptor {
    /// Wire id within the service.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Input type name.
    pub input: String,
    /// Output or event type name.
    pub output: String,
    /// Timeout in milliseconds, if the method sets one.
    pub timeout_ms: Option<u64>,
    /// Whether the method is an event stream (subscription) rather than unary.
    pub streaming: bool,
}

/// One service as the registry table describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDescriptor {
    /// Wire id.
    pub id: u16,
    /// Name (what clients call it by).
    pub name: String,
    /// Version.
    pub version: String,
    /// Namespace.
    pub namespace: String,
    /// Methods in id order.
    pub methods: Vec<MethodDescriptor>,
}

/// Body of the `describe` response: every registered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryTable {
    /// Services in id order.
    pub services: Vec<ServiceDescriptor>,
}

impl RegistryTable {
    /// The `(service_id, method_id)` for names.
    pub fn resolve(&self, service: &str, method: &str) -> Result<(u16, u16), RpcError> {
        let svc = self
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::UnknownService,
                    format!("unknown service {service:?}"),
                )
            })?;
        let m = svc
            .methods
            .iter()
            .find(|m| m.name == method)
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::UnknownMethod,
                    format!("service {service:?} has no method {method:?}"),
                )
            })?;
        Ok((svc.id, m.id))
    }
}

pub(crate) struct MethodEntry {
    /// What the method is reported as (observer, request spans).
    pub(crate) names: Arc<crate::server::observer::MethodNames>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) handler: Handler,
}

/// The frozen table a running server dispatches on.
pub(crate) struct Registry {
    /// Index = service id - 1; inner index = method id - 1.
    services: Vec<Vec<MethodEntry>>,
    by_name: HashMap<String, usize>,
    table: RegistryTable,
    /// The `describe` response, encoded once.
    describe_body: Bytes,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        let table = RegistryTable {
            services: Vec::new(),
        };
        Registry {
            services: Vec::new(),
            by_name: HashMap::new(),
            describe_body: Bytes::new(),
            table,
        }
    }

    pub(crate) fn register(&mut self, service: ServiceBuilder) -> Result<u16> {
        if service.name == SYSTEM_SERVICE_NAME || self.by_name.contains_key(&service.name) {
            return Err(Error::DuplicateService { name: service.name });
        }
        if self.services.len() >= SERVICES_MAX {
            return Err(Error::RegistryFull { what: "services" });
        }
        if service.methods.len() > METHODS_PER_SERVICE_MAX {
            return Err(Error::RegistryFull { what: "methods" });
        }
        let id = u16::try_from(self.services.len() + 1)
            .map_err(|_| Error::RegistryFull { what: "services" })?;
        let mut descriptors: Vec<MethodDescriptor> = Vec::with_capacity(service.methods.len());
        let mut entries = Vec::with_capacity(service.methods.len());
        let service_name: Arc<str> = Arc::from(service.name.as_str());
        for (index, method) in service.methods.into_iter().enumerate() {
            if descriptors.iter().any(|d| d.name == method.builder.name) {
                return Err(Error::DuplicateMethod {
                    service: service.name,
                    method: method.builder.name,
                });
            }
            let b = method.builder;
            descriptors.push(MethodDescriptor {
                id: (index + 1) as u16,
                name: b.name.clone(),
                input: b.input,
                output: b.output,
                timeout_ms: b.timeout.map(|t| t.as_millis() as u64),
                streaming: matches!(method.handler, Handler::Events(_)),
            });
            entries.push(MethodEntry {
                names: Arc::new(crate::server::observer::MethodNames {
                    service: service_name.clone(),
                    method: Arc::from(b.name.as_str()),
                }),
                timeout: b.timeout,
                handler: method.handler,
            });
        }
        self.by_name
            .insert(service.name.clone(), self.services.len());
        self.services.push(entries);
        self.table.services.push(ServiceDescriptor {
            id,
            name: service.name,
            version: service.version,
            namespace: service.namespace,
            methods: descriptors,
        });
        self.describe_body = Bytes::new();
        Ok(id)
    }

    /// Encode the describe table once, when the server starts.
    pub(crate) fn freeze(&mut self) -> Result<()> {
        self.describe_body = Bytes::from(qiss::to_vec(&self.table)?);
        Ok(())
    }

    pub(crate) fn describe_body(&self) -> Bytes {
        self.describe_body.clone()
    }

    pub(crate) fn lookup(&self, service_id: u16, method_id: u16) -> Result<&MethodEntry, RpcError> {
        let methods = (service_id as usize)
            .checked_sub(1)
            .and_then(|i| self.services.get(i))
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::UnknownService,
                    format!("unknown service id {service_id}"),
                )
            })?;
        (method_id as usize)
            .checked_sub(1)
            .and_then(|i| methods.get(i))
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::UnknownMethod,
                    format!("service {service_id} has no method id {method_id}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(name: &str) -> Method {
        MethodBuilder::new(name).raw_sync_handler(|_, body| Ok(body))
    }

    #[test]
    fn ids_follow_registration_order() {
        let mut registry = Registry::new();
        let a = ServiceBuilder::new("a").method(echo("x")).method(echo("y"));
        let b = ServiceBuilder::new("b")
            .version("2")
            .namespace("ns")
            .method(echo("z"));
        assert_eq!(registry.register(a).unwrap(), 1);
        assert_eq!(registry.register(b).unwrap(), 2);
        assert_eq!(registry.table.resolve("a", "y"), Ok((1, 2)));
        assert_eq!(registry.table.resolve("b", "z"), Ok((2, 1)));
        assert_eq!(
            registry.table.resolve("c", "z").unwrap_err().code,
            ErrorCode::UnknownService as u16
        );
        assert_eq!(
            registry.table.resolve("a", "z").unwrap_err().code,
            ErrorCode::UnknownMethod as u16
        );
        assert!(registry.lookup(1, 2).is_ok());
        assert_eq!(
            registry.lookup(0, 1).err().unwrap().code,
            ErrorCode::UnknownService as u16
        );
        assert_eq!(
            registry.lookup(3, 1).err().unwrap().code,
            ErrorCode::UnknownService as u16
        );
        assert_eq!(
            registry.lookup(1, 0).err().unwrap().code,
            ErrorCode::UnknownMethod as u16
        );
        assert_eq!(
            registry.lookup(1, 3).err().unwrap().code,
            ErrorCode::UnknownMethod as u16
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let mut registry = Registry::new();
        registry
            .register(ServiceBuilder::new("a").method(echo("x")))
            .unwrap();
        assert!(matches!(
            registry.register(ServiceBuilder::new("a")),
            Err(Error::DuplicateService { .. })
        ));
        assert!(matches!(
            registry.register(ServiceBuilder::new(SYSTEM_SERVICE_NAME)),
            Err(Error::DuplicateService { .. })
        ));
        let dup = ServiceBuilder::new("b").method(echo("x")).method(echo("x"));
        assert!(matches!(
            registry.register(dup),
            Err(Error::DuplicateMethod { .. })
        ));
    }
}
