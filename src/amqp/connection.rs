//! [`Connection`]: lapin's `Connection`, whose channels are traced.

use lapin::types::{LongString, ReplyCode, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Configuration, ConnectionProperties, ConnectionStatus};

use super::channel::Channel;
use crate::semconv::Endpoint;

/// lapin's `Connection`, the same to connect and to use, whose
/// [`Connection::create_channel`] gives traced [`Channel`]s that know the
/// broker they talk to (`server.address`, `server.port`; never the
/// credentials).
pub struct Connection {
    inner: lapin::Connection,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// lapin's [`Connection::connect`](lapin::Connection::connect).
    pub async fn connect(uri: &str, options: ConnectionProperties) -> lapin::Result<Self> {
        let inner = lapin::Connection::connect(uri, options).await?;
        Ok(Self {
            inner,
            endpoint: super::endpoint(uri),
        })
    }

    /// lapin's [`Connection::connect_uri`](lapin::Connection::connect_uri).
    pub async fn connect_uri(uri: AMQPUri, options: ConnectionProperties) -> lapin::Result<Self> {
        let endpoint = Endpoint {
            address: Some(uri.authority.host.as_str().into()),
            port: Some(uri.authority.port),
            client_id: None,
        };
        let inner = lapin::Connection::connect_uri(uri, options).await?;
        Ok(Self { inner, endpoint })
    }

    /// Opens a traced [`Channel`], as lapin's
    /// [`Connection::create_channel`](lapin::Connection::create_channel).
    pub async fn create_channel(&self) -> lapin::Result<Channel> {
        let channel = self.inner.create_channel().await?;
        Ok(Channel::new(channel, self.endpoint.clone()))
    }

    /// lapin's [`Connection::configuration`](lapin::Connection::configuration).
    pub fn configuration(&self) -> &Configuration {
        self.inner.configuration()
    }

    /// lapin's [`Connection::status`](lapin::Connection::status).
    pub fn status(&self) -> &ConnectionStatus {
        self.inner.status()
    }

    /// lapin's [`Connection::close`](lapin::Connection::close).
    pub async fn close(&self, reply_code: ReplyCode, reply_text: ShortString) -> lapin::Result<()> {
        self.inner.close(reply_code, reply_text).await
    }

    /// lapin's [`Connection::update_secret`](lapin::Connection::update_secret).
    pub async fn update_secret(
        &self,
        new_secret: LongString,
        reason: ShortString,
    ) -> lapin::Result<()> {
        self.inner.update_secret(new_secret, reason).await
    }

    /// The lapin connection (its channels are not traced).
    pub fn get_ref(&self) -> &lapin::Connection {
        &self.inner
    }

    /// Unwraps the lapin connection.
    pub fn into_inner(self) -> lapin::Connection {
        self.inner
    }
}
