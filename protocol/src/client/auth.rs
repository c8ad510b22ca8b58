//! Re-authentication of an open connection: an `Auth` frame after the handshake,
//! carrying a fresh token for the same principal (docs/protocol.md, "Re-authentication").
//!
//! The server answers `AuthOk` and replaces the connection's credential (roles, expiry,
//! credential id; the expiry timer is re-armed), or refuses with `Unauthenticated` (the
//! token is bad) or `PrincipalMismatch` (it names another principal) and keeps the old
//! credential until that one expires. Either way the connection stays open, with its
//! in-flight calls and subscriptions.

use std::sync::Arc;

use bytes::Bytes;

use super::{Call, CallOptions, Connection, NeoClient};
use crate::auth::AuthOk;
use crate::error::{Error, Result};
use crate::frame::Kind;

impl NeoClient {
    /// Renew the connection's credential with `token` (a fresh JWT before the old one
    /// expires, say) without closing it; returns the principal the server names. The
    /// token must name the connection's principal: another one is refused with
    /// `PrincipalMismatch` (an [`Error::Rpc`]), a bad one with `Unauthenticated`, and
    /// the connection keeps its old credential in both cases.
    ///
    /// Once accepted, the token is also the one every later reconnect sends. Without an
    /// open connection, this dials one with the new token (kept only if the server
    /// accepts it). Bounded by `call_timeout` (an open connection) or the dial's
    /// `connect_timeout` and reconnect attempts. Concurrent re-authentications of one
    /// client race: the last accepted token is kept.
    pub async fn reauthenticate(&self, token: impl Into<Vec<u8>>) -> Result<String> {
        let token: Vec<u8> = token.into();
        if let Some(conn) = self.current() {
            match self.renew(&conn, token.clone()).await {
                Ok(principal) => {
                    self.set_token(Some(token));
                    return Ok(principal);
                }
                // The connection ended under the call: dial a new one with the token.
                Err(err) if !matches!(err, Error::Rpc(_)) && conn.is_closed() => {
                    tracing::debug!(addr = %self.inner.addr, %err, "re-authentication: connection ended, dialling");
                }
                Err(err) => return Err(err),
            }
        }
        let previous = self.set_token(Some(token));
        match self.connection().await {
            Ok(conn) => Ok(principal_of(&conn)),
            Err(err) => {
                if matches!(err, Error::Rpc(_)) {
                    // Refused: reconnects keep using the token that was accepted before.
                    self.set_token(previous);
                }
                Err(err)
            }
        }
    }

    /// Send `token` in an `Auth` frame on `conn`; on `AuthOk`, note the principal.
    async fn renew(&self, conn: &Arc<Connection>, token: Vec<u8>) -> Result<String> {
        let body = Call::new(
            self,
            Some(Arc::clone(conn)),
            Kind::Auth,
            0,
            0,
            Bytes::from(token),
            CallOptions::timeout(self.inner.config.call_timeout),
        )
        .await?;
        let ok: AuthOk = qiss::from_slice(&body)?;
        *conn.principal.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok.principal.clone());
        Ok(ok.principal)
    }

    /// Replace the token of the next handshake; returns the previous one.
    fn set_token(&self, token: Option<Vec<u8>>) -> Option<Vec<u8>> {
        std::mem::replace(
            &mut *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()),
            token,
        )
    }
}

/// The principal a connection's last handshake named (empty when none was needed).
fn principal_of(conn: &Connection) -> String {
    conn.principal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}
