//! Which client software a peer runs, read from its peer id's prefix, as one byte (a "class"):
//! the swarm keeps it in a spare byte of each peer, so the status page can count peers by
//! client at no memory cost. The conventions are the common ones: Azureus style `-XX1234-`
//! (two letters naming the client), aria2's `A2-`, and Mainline's `M1-2-3--`. Versions are
//! not kept: operators ask "which clients use the tracker", not which builds.

use super::PeerId;

/// A client class: an index into [`name`]'s table.
pub type ClientClass = u8;

/// No recognisable prefix (or a peer restored from a snapshot, which does not keep it).
pub const UNKNOWN: ClientClass = 0;

/// Azureus-style codes this tracker names, sorted by code (a binary search finds one), each
/// with the client it stands for.
const AZUREUS: &[([u8; 2], &str)] = &[
    (*b"7T", "aTorrent"),
    (*b"AG", "Ares"),
    (*b"AZ", "Vuze"),
    (*b"BC", "BitComet"),
    (*b"BF", "Bitflu"),
    (*b"BI", "BiglyBT"),
    (*b"BN", "Baidu Netdisk"),
    (*b"BT", "BitTorrent"),
    (*b"CD", "Enhanced CTorrent"),
    (*b"CT", "CTorrent"),
    (*b"DE", "Deluge"),
    (*b"FD", "Free Download Manager"),
    (*b"FW", "FrostWire"),
    (*b"FX", "FlashGet"),
    (*b"HL", "Halite"),
    (*b"KT", "KTorrent"),
    (*b"LT", "libtorrent (Rasterbar)"),
    (*b"LW", "LimeWire"),
    (*b"ML", "MLDonkey"),
    (*b"MO", "MonoTorrent"),
    (*b"PI", "PicoTorrent"),
    (*b"SD", "Thunder"),
    (*b"SZ", "Shareaza"),
    (*b"TL", "Tribler"),
    (*b"TR", "Transmission"),
    (*b"TT", "TuoTu"),
    (*b"UM", "µTorrent Mac"),
    (*b"UT", "µTorrent"),
    (*b"UW", "µTorrent Web"),
    (*b"WD", "WebTorrent Desktop"),
    (*b"WW", "WebTorrent"),
    (*b"XL", "Xunlei"),
    (*b"lt", "rTorrent (libtorrent)"),
    (*b"qB", "qBittorrent"),
];

/// Classes after the Azureus table's.
const ARIA2: ClientClass = AZUREUS.len() as ClientClass + 1;
const MAINLINE: ClientClass = ARIA2 + 1;
/// Azureus style, but a code not in the table.
const OTHER_AZUREUS: ClientClass = MAINLINE + 1;

/// How many classes there are: counters indexed by class have this many slots.
pub const CLASSES: usize = OTHER_AZUREUS as usize + 1;

// A class must fit the six spare flag bits a snapshot's peer record could keep it in.
const _: () = assert!(CLASSES <= 64);

/// The class of the client that sent `peer_id`. A few comparisons: it runs on every announce.
#[inline]
pub fn classify(peer_id: &PeerId) -> ClientClass {
    let b = peer_id;
    if b[0] == b'-' && b[7] == b'-' {
        let code = [b[1], b[2]];
        return match AZUREUS.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(i) => i as ClientClass + 1,
            Err(_) => OTHER_AZUREUS,
        };
    }
    if b.starts_with(b"A2-") {
        return ARIA2;
    }
    if b[0] == b'M' && b[1].is_ascii_digit() && (b[2] == b'-' || b[3] == b'-') {
        return MAINLINE;
    }
    UNKNOWN
}

/// What a class is called on the status page.
pub fn name(class: ClientClass) -> &'static str {
    match class {
        UNKNOWN => "unknown",
        ARIA2 => "aria2",
        MAINLINE => "Mainline",
        OTHER_AZUREUS => "other (Azureus-style)",
        c => AZUREUS
            .get(c as usize - 1)
            .map_or("unknown", |(_, name)| name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> PeerId {
        let mut id = [b'x'; 20];
        id[..prefix.len()].copy_from_slice(prefix);
        id
    }

    #[test]
    fn the_table_is_sorted_so_the_search_finds_every_code() {
        assert!(AZUREUS.windows(2).all(|w| w[0].0 < w[1].0));
        for (i, (code, name_)) in AZUREUS.iter().enumerate() {
            let mut prefix = *b"-XX1234-";
            prefix[1..3].copy_from_slice(code);
            let class = classify(&id(&prefix));
            assert_eq!(class as usize, i + 1);
            assert_eq!(name(class), *name_);
        }
    }

    #[test]
    fn real_peer_ids_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"-qB4650-", "qBittorrent"),
            (b"-TR4060-", "Transmission"),
            (b"-LT2090-", "libtorrent (Rasterbar)"),
            (b"-lt0D80-", "rTorrent (libtorrent)"),
            (b"-CD0303-", "Enhanced CTorrent"),
            (b"A2-1-37-0-", "aria2"),
            (b"M7-4-0--", "Mainline"),
            (b"M10-1-0-", "Mainline"),
            (b"-ZZ0001-", "other (Azureus-style)"),
            (b"exbc", "unknown"),
            // No dash after the version: not Azureus style.
            (b"-qB4650x", "unknown"),
        ];
        for (prefix, want) in cases {
            let got = name(classify(&id(prefix)));
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(prefix));
        }
    }

    #[test]
    fn every_class_has_a_name_and_fits_the_counters() {
        for c in 0..CLASSES {
            assert!(!name(c as ClientClass).is_empty());
        }
        assert_eq!(name(CLASSES as ClientClass), "unknown");
    }
}
