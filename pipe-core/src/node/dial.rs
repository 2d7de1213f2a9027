//! TCP connections out of a client node, to a server node or to its HTTP
//! proxy, from the local address the operator chose (`source_address`),
//! if any.
//!
//! On a multi-homed host the address a connection leaves from decides the
//! interface, the route and what firewalls on the way see; without a
//! choice the kernel picks by the routing table. The socket is bound to
//! the address (port 0: the kernel picks the port) before it connects.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Opens a TCP connection to `address`, from `source` when given.
///
/// An address of the other family than `source` cannot be reached from it:
/// callers keep only the addresses [`reachable_from`] accepts.
pub(super) async fn dial(
    address: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(address).await;
    };
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0)).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("binding to the source address {source}: {error}"),
        )
    })?;
    socket.connect(address).await
}

/// Whether `address` can be dialled from `source`: always without one,
/// otherwise when both are of the same family (IPv4 or IPv6).
pub(super) fn reachable_from(address: &SocketAddr, source: Option<IpAddr>) -> bool {
    source.is_none_or(|source| source.is_ipv4() == address.is_ipv4())
}

/// The error for a server or proxy `what` none of whose addresses is of
/// `source`'s family.
pub(super) fn no_address_of_family(what: &str, source: IpAddr) -> std::io::Error {
    let family = if source.is_ipv4() { "IPv4" } else { "IPv6" };
    std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("{what} has no {family} address, which the source address {source} needs"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_leaves_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let (dialled, accepted) = tokio::join!(dial(address, Some(source)), listener.accept());
        assert_eq!(dialled.unwrap().local_addr().unwrap().ip(), source);
        assert_eq!(accepted.unwrap().1.ip(), source);
    }

    #[test]
    fn only_addresses_of_the_source_family_are_reachable() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(reachable_from(&v4, None) && reachable_from(&v6, None));
        assert!(reachable_from(&v4, Some(source)));
        assert!(!reachable_from(&v6, Some(source)));
    }
}
