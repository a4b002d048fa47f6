//! The broker a client talks to and the client's id ([`Endpoint`]), read
//! from a bootstrap-server list.

use std::sync::Arc;

use opentelemetry::StringValue;

use super::MessagingAttributes;

/// The broker a client talks to and the client's own id: the
/// `server.address`, `server.port` and `messaging.client.id` attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `server.address` (shared, so each span's copy is a reference count).
    pub address: Option<Arc<str>>,
    /// `server.port`.
    pub port: Option<u16>,
    /// `messaging.client.id`.
    pub client_id: Option<Arc<str>>,
}

impl Endpoint {
    /// From the first entry of a `host:port[,host:port…]` list (an optional
    /// `scheme://` prefix is ignored; IPv6 hosts in brackets are kept whole).
    pub fn from_servers(servers: &str, client_id: Option<&str>) -> Self {
        let first = servers.split(',').next().unwrap_or("").trim();
        let first = first.split_once("://").map_or(first, |(_, rest)| rest);
        let (address, port) = match first.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => (first, None),
            },
            _ => (first, None),
        };
        Self {
            address: (!address.is_empty()).then(|| Arc::from(address)),
            port,
            client_id: client_id.filter(|c| !c.is_empty()).map(Arc::from),
        }
    }

    /// Adds the endpoint's attributes.
    pub fn apply<'r>(&self, attributes: MessagingAttributes<'r>) -> MessagingAttributes<'r> {
        let attributes = match &self.address {
            Some(address) => attributes.server(StringValue::from(address.clone()), self.port),
            None => attributes,
        };
        match &self.client_id {
            Some(id) => attributes.client_id(StringValue::from(id.clone())),
            None => attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semconv::AttributeRules;

    #[test]
    fn endpoints_parse_the_first_server() {
        let e = Endpoint::from_servers("broker-1:9093,broker-2:9093", Some("svc"));
        assert_eq!(e.address.as_deref(), Some("broker-1"));
        assert_eq!(e.port, Some(9093));
        assert_eq!(e.client_id.as_deref(), Some("svc"));
        let e = Endpoint::from_servers("PLAINTEXT://10.0.0.1:9092", None);
        assert_eq!(
            (e.address.as_deref(), e.port),
            (Some("10.0.0.1"), Some(9092))
        );
        let e = Endpoint::from_servers("localhost", Some(""));
        assert_eq!(
            (e.address.as_deref(), e.port, e.client_id),
            (Some("localhost"), None, None)
        );
        let e = Endpoint::from_servers("[::1]:9092", None);
        assert_eq!((e.address.as_deref(), e.port), (Some("[::1]"), Some(9092)));
        let attrs = Endpoint::from_servers("b:1", Some("c"))
            .apply(MessagingAttributes::later(&AttributeRules::default()))
            .into_vec();
        assert_eq!(attrs.len(), 3);
    }
}
