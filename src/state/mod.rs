//! What survives a restart: the swarm snapshot (every peer, every torrent's `downloaded`, the
//! connection-id key) as a file format (`snapshot`, pure) and the file handling around it
//! (`files`: atomic writes, and moving a file that cannot be restored out of the way so the
//! tracker still starts).

pub mod files;
pub mod snapshot;
