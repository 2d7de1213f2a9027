//! restpipe's library: everything both nodes are made of.
//!
//! A node is a local HTTP front ([`http`]) in front of a [`node::Node`]
//! holding handlers ([`handler`]) and live pipe connections ([`peers`]).
//! The server side accepts connections ([`server`]); the client side keeps one
//! alive ([`client`]). Each connection ([`connection`]) multiplexes events
//! over mutually authenticated TLS 1.3 ([`tls`]) in length-prefixed protobuf
//! frames ([`frame`]).

pub mod backoff;
pub mod body;
pub mod client;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod events;
pub mod exec;
pub mod forward;
pub mod frame;
pub mod handler;
pub mod http;
pub mod identity;
pub mod launch;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod pki;
pub mod policy;
pub mod proto;
pub mod router;
pub mod server;
pub mod tls;

pub use handler::{HandlerError, Registry, Reply, Request, Side};
pub use node::{Node, NodeSettings};
