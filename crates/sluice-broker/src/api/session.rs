//! A connection's identity as the protocol sees it: which listener it came
//! in on, from where, as whom, and how far its SASL authentication has got.
//! `net` keeps one per connection; only the SASL requests change it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;

use crate::config::SecurityProtocol;
use crate::security::Principal;
use crate::security::sasl::SaslServer;

/// The listener a connection came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub name: String,
    pub protocol: SecurityProtocol,
}

/// One connection's identity.
#[derive(Debug)]
pub struct Session {
    pub listener: Arc<ListenerInfo>,
    pub peer: SocketAddr,
    /// `User:ANONYMOUS` until SASL authenticates (or the TLS client
    /// certificate's subject on an SSL listener).
    pub principal: Principal,
    pub(super) auth: Auth,
    /// The size of the request being handled (Produce's quota charge).
    pub(super) request_bytes: usize,
    /// How long `net` reads nothing more from this connection after the
    /// answer it is sending (a quota's throttle, KIP-219).
    pub mute_for: std::time::Duration,
}

#[derive(Debug)]
pub(super) enum Auth {
    /// Requests are served: the listener needs no SASL, or the client has
    /// authenticated; with a session lifetime (KIP-368), until `expires`.
    Open { expires: Option<Instant> },
    /// A SASL listener before SaslHandshake.
    AwaitHandshake,
    /// After SaslHandshake: the mechanism's tokens. `raw` after a v0
    /// handshake (tokens come as bare size-prefixed frames, not
    /// SaslAuthenticate requests); `reauth` when an authenticated session is
    /// renewing itself.
    Exchange {
        server: Box<SaslServer>,
        raw: bool,
        reauth: bool,
        started: bool,
    },
}

impl Session {
    /// A new connection on `listener`. `principal` is the TLS client
    /// certificate's, if one was presented.
    pub fn new(
        listener: Arc<ListenerInfo>,
        peer: SocketAddr,
        principal: Option<Principal>,
    ) -> Session {
        let auth = if listener.protocol.sasl() {
            Auth::AwaitHandshake
        } else {
            Auth::Open { expires: None }
        };
        Session {
            listener,
            peer,
            principal: principal.unwrap_or_else(Principal::anonymous),
            auth,
            request_bytes: 0,
            mute_for: std::time::Duration::ZERO,
        }
    }

    /// Whether requests beyond ApiVersions and SASL's are served.
    pub fn authenticated(&self) -> bool {
        matches!(self.auth, Auth::Open { .. })
            || matches!(self.auth, Auth::Exchange { reauth: true, .. })
    }

    /// After a v0 SaslHandshake: the next frame is a bare SASL token.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.auth, Auth::Exchange { raw: true, .. })
    }

    /// Why `api` may not be sent now, if it may not.
    pub(super) fn refuses(&self, api: Option<ApiKey>, now: Instant) -> Option<String> {
        use ApiKey::{ApiVersions, SaslAuthenticate, SaslHandshake};
        match (&self.auth, api) {
            (_, Some(ApiVersions)) => None,
            (Auth::Open { .. }, Some(SaslHandshake)) => None,
            (Auth::Open { expires: Some(at) }, api) if *at <= now => Some(format!(
                "{} sent after its session expired (connections.max.reauth.ms)",
                name(api)
            )),
            (Auth::Open { .. }, _) => None,
            (Auth::AwaitHandshake, Some(SaslHandshake)) => None,
            (Auth::AwaitHandshake, api) => {
                Some(format!("{} sent before SASL authentication", name(api)))
            }
            (Auth::Exchange { raw: false, .. }, Some(SaslAuthenticate)) => None,
            (Auth::Exchange { .. }, api) => {
                Some(format!("{} sent during SASL authentication", name(api)))
            }
        }
    }
}

fn name(api: Option<ApiKey>) -> String {
    match api {
        Some(a) => format!("{a:?}"),
        None => "an unknown API".into(),
    }
}
