//! Every reason an announce or scrape is refused, whichever frontend carried it, with the one
//! message the client reads (a BEP 15 error packet or a bencoded `failure reason`) and the one
//! `hayate_errors_total` reason it is counted under. Frontends only render it.

use std::borrow::Cow;

use crate::connection_id::ConnectionIdError;
use crate::stats::ErrorReason;
use crate::swarm::Refused;

use super::access_list::REFUSED_MESSAGE;
use super::client_list::REFUSED_MESSAGE as CLIENT_REFUSED;
use super::jwt::JwtRefusal;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request could not be read; the message says what was wrong.
    Malformed(Cow<'static, str>),
    /// A BEP 15 connection id that is forged, expired or from the future.
    ConnectionId(ConnectionIdError),
    /// The access list refuses the torrent.
    TorrentNotAllowed,
    /// The client list refuses the announcer's peer id.
    ClientNotAllowed,
    /// `[jwt] mode = "required"` and the announce's token is missing or not good.
    Jwt(JwtRefusal),
    /// The swarm is at a limit.
    Full(Refused),
    /// The owning worker could not take or finish the request in time (HTTP).
    Busy,
}

/// What the client sees when its worker cannot take or finish the request in time.
pub const BUSY_MESSAGE: &str = "tracker busy, retry";

impl Refusal {
    /// What the client is told. Short: a BEP 15 error reply is cut to the request's length.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Malformed(m) => m,
            Refusal::ConnectionId(ConnectionIdError::Expired) => "connection id expired",
            Refusal::ConnectionId(_) => "invalid connection id",
            Refusal::TorrentNotAllowed => REFUSED_MESSAGE,
            Refusal::ClientNotAllowed => CLIENT_REFUSED,
            Refusal::Jwt(j) => j.message(),
            Refusal::Full(r) => r.message(),
            Refusal::Busy => BUSY_MESSAGE,
        }
    }

    /// The reason it is counted under.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Refusal::Malformed(_) => ErrorReason::Malformed,
            Refusal::ConnectionId(ConnectionIdError::Expired) => ErrorReason::ConnectionIdExpired,
            Refusal::ConnectionId(_) => ErrorReason::ConnectionIdInvalid,
            Refusal::TorrentNotAllowed => ErrorReason::TorrentNotAllowed,
            Refusal::ClientNotAllowed => ErrorReason::ClientNotAllowed,
            Refusal::Jwt(_) => ErrorReason::JwtRefused,
            Refusal::Full(Refused::TrackerFull) => ErrorReason::TrackerFull,
            Refusal::Full(Refused::TorrentFull) => ErrorReason::TorrentFull,
            Refusal::Full(Refused::SourcePeers | Refused::SourceTorrents) => {
                ErrorReason::SourceQuota
            }
            Refusal::Busy => ErrorReason::WorkerTimeout,
        }
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Refusal::Full(r)
    }
}

impl From<ConnectionIdError> for Refusal {
    fn from(e: ConnectionIdError) -> Self {
        Refusal::ConnectionId(e)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_reason_and_a_short_message() {
        let all = [
            Refusal::Malformed("port 0 is not a port".into()),
            Refusal::ConnectionId(ConnectionIdError::Forged),
            Refusal::ConnectionId(ConnectionIdError::Expired),
            Refusal::TorrentNotAllowed,
            Refusal::ClientNotAllowed,
            Refusal::Jwt(JwtRefusal::Expired),
            Refusal::Full(Refused::TrackerFull),
            Refusal::Full(Refused::TorrentFull),
            Refusal::Busy,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(|r| r.reason() as u8).collect();
        assert_eq!(reasons.len(), all.len(), "one reason each");
        for r in &all {
            // A BEP 15 error reply carries 8 header bytes and must not outgrow the 98-byte
            // announce it answers.
            assert!(r.message().len() <= 90, "{r:?}");
        }
        for j in JwtRefusal::ALL {
            assert!(Refusal::Jwt(j).message().len() <= 90, "{j:?}");
        }
        assert_eq!(
            Refusal::ConnectionId(ConnectionIdError::FromTheFuture).reason(),
            ErrorReason::ConnectionIdInvalid
        );
    }
}
