//! What survives a restart: the swarm snapshot (every peer, every torrent's `downloaded`, the
//! connection-id key) as a file format (`snapshot`, pure), the file handling around it
//! (`files`: atomic writes, and moving a file that cannot be restored out of the way so the
//! tracker still starts), the thread that gathers the workers' sections and writes the file
//! (`keeper`), and the start-up that reads it back into the workers' shards (`restore`).

pub mod files;
pub mod keeper;
pub mod restore;
pub mod snapshot;
