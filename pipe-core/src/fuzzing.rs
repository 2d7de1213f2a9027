//! Thin wrappers over internals, for the fuzz targets only (feature
//! `fuzzing`, which only the fuzz crate enables). Nothing here is part of
//! the library's interface; each wrapper forwards to the code it names, so
//! the targets test exactly what the nodes run.

use crate::link::PeerHandle;

/// How many entries one link's tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTables {
    /// Our requests awaiting the peer's reply.
    pub pending: usize,
    /// The peer's requests our handlers are working on.
    pub running: usize,
    /// Streamed bodies arriving from the peer.
    pub receiving: usize,
    /// Streamed bodies we are sending.
    pub sending: usize,
}

/// The sizes of `handle`'s connection tables.
pub fn link_tables(handle: &PeerHandle) -> LinkTables {
    let [pending, running, receiving, sending] = handle.table_sizes();
    LinkTables {
        pending,
        running,
        receiving,
        sending,
    }
}
