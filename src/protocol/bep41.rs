//! BEP 41, the UDP tracker protocol extensions: the option bytes that may follow the 98-byte
//! announce. A UDP tracker URL's path and query (`/announce?jwt=...`) travel there as URLData
//! options, so this module is where hooks get a UDP announce's path and query from. It also owns
//! the allocation-free query helpers those hooks use (find a parameter, percent-decode it).
//!
//! Everything here is pure and allocation-free: the concatenated URL is written into a buffer the
//! caller owns (a worker keeps one), and slices of it are handed out.
//!
//! The option format, as the BEP gives it: one option-type byte; EndOfOptions (0x0) and NOP (0x1)
//! are that byte alone; every other type is followed by a length byte and that many data bytes.
//! Parsing stops at EndOfOptions or at the end of the packet. URLData (0x2) options are
//! concatenated in order, since one option carries at most 255 bytes. Because every type past
//! NOP carries its own length, a type this tracker does not know is skipped rather than refused:
//! a client that adds a future option still gets its announce answered. What is refused is an
//! option that claims more bytes than the packet holds, and a URL longer than the buffer.

use super::hex_digit as hex;

/// Option types defined by BEP 41.
pub const OPTION_END: u8 = 0x0;
pub const OPTION_NOP: u8 = 0x1;
pub const OPTION_URL_DATA: u8 = 0x2;

/// A buffer size that holds any URL a sane client sends (libtorrent sends `/announce` plus its
/// query; a signed JWT is well under 2 KiB). Callers may use any size.
pub const URL_CAPACITY: usize = 2048;

/// Why the option bytes or a query value could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Bep41Error {
    /// An option's length byte, or its data, runs past the end of the packet.
    #[error("BEP 41 option {option_type:#04x} at option byte {offset} needs {needed} bytes, {left} left")]
    Truncated {
        option_type: u8,
        /// Offset of the option-type byte within the option bytes.
        offset: usize,
        needed: usize,
        left: usize,
    },
    /// The URLData options together are longer than the caller's buffer.
    #[error("BEP 41 URL data longer than {capacity} bytes")]
    UrlTooLong { capacity: usize },
    /// A `%` not followed by two hex digits.
    #[error("bad percent escape at byte {offset} (must be % and two hex digits)")]
    BadEscape { offset: usize },
    /// The decoded value does not fit the caller's buffer.
    #[error("decoded value longer than {capacity} bytes")]
    DecodedTooLong { capacity: usize },
}

/// The option bytes of an announce packet: whatever follows the fixed 98 bytes (none when the
/// packet is not longer).
pub fn options_of(announce_packet: &[u8]) -> &[u8] {
    announce_packet
        .get(super::udp::ANNOUNCE_LEN..)
        .unwrap_or(&[])
}

/// Walks the option bytes and writes every URLData option's data, concatenated, into `out`.
/// Returns the filled part of `out`: empty when the packet carried no URL data.
pub fn url_data<'b>(options: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], Bep41Error> {
    let mut len = 0;
    let mut i = 0;
    while let Some(&option_type) = options.get(i) {
        match option_type {
            OPTION_END => break,
            OPTION_NOP => i += 1,
            _ => {
                let left = options.len() - i;
                let Some(&data_len) = options.get(i + 1) else {
                    return Err(Bep41Error::Truncated {
                        option_type,
                        offset: i,
                        needed: 2,
                        left,
                    });
                };
                let data_len = usize::from(data_len);
                let Some(data) = options.get(i + 2..i + 2 + data_len) else {
                    return Err(Bep41Error::Truncated {
                        option_type,
                        offset: i,
                        needed: 2 + data_len,
                        left,
                    });
                };
                if option_type == OPTION_URL_DATA {
                    let capacity = out.len();
                    let Some(slot) = out.get_mut(len..len + data_len) else {
                        return Err(Bep41Error::UrlTooLong { capacity });
                    };
                    slot.copy_from_slice(data);
                    len += data_len;
                }
                i += 2 + data_len;
            }
        }
    }
    Ok(&out[..len])
}

/// A URL split at its first `?`: the path before it, the query after it (without the `?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    pub path: &'a [u8],
    pub query: &'a [u8],
}

impl<'a> Url<'a> {
    /// Splits `url` (e.g. `/announce?jwt=abc&x=1`); a URL without `?` has an empty query.
    pub fn split(url: &'a [u8]) -> Url<'a> {
        match url.iter().position(|&b| b == b'?') {
            Some(q) => Url {
                path: &url[..q],
                query: &url[q + 1..],
            },
            None => Url {
                path: url,
                query: &[],
            },
        }
    }

    /// The raw (still escaped) value of the query parameter `name`; see [`query_param`].
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        query_param(self.query, name)
    }
}

/// The raw (still percent-escaped) value of the first `name=value` pair in `query` whose key,
/// percent-decoded, is `name`. A key without `=` has an empty value. Allocates nothing.
pub fn query_param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    super::urlencoded::pairs(query).find_map(|(key, value)| key_is(key, name).then_some(value))
}

/// Whether `raw`, percent-decoded on the fly, is exactly `name` (a bad escape never matches).
fn key_is(raw: &[u8], name: &[u8]) -> bool {
    let mut want = name.iter();
    let mut i = 0;
    while i < raw.len() {
        let byte = if raw[i] == b'%' {
            match escaped_byte(raw, i) {
                Some(b) => {
                    i += 3;
                    b
                }
                None => return false,
            }
        } else {
            i += 1;
            raw[i - 1]
        };
        if want.next() != Some(&byte) {
            return false;
        }
    }
    want.next().is_none()
}

/// Percent-decodes `raw` (`%` and two hex digits; `+` is left as is, as the HTTP frontend does).
/// Without any `%` the input itself is returned and `out` is not touched; otherwise the decoded
/// bytes are written into `out` and the filled part returned.
pub fn percent_decode<'a>(raw: &'a [u8], out: &'a mut [u8]) -> Result<&'a [u8], Bep41Error> {
    if memchr::memchr(b'%', raw).is_none() {
        return Ok(raw);
    }
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let byte = if raw[i] == b'%' {
            let b = escaped_byte(raw, i).ok_or(Bep41Error::BadEscape { offset: i })?;
            i += 3;
            b
        } else {
            i += 1;
            raw[i - 1]
        };
        let capacity = out.len();
        let slot = out
            .get_mut(len)
            .ok_or(Bep41Error::DecodedTooLong { capacity })?;
        *slot = byte;
        len += 1;
    }
    Ok(&out[..len])
}

/// The byte that the escape `%XY` at `raw[at]` stands for.
fn escaped_byte(raw: &[u8], at: usize) -> Option<u8> {
    let hi = hex(*raw.get(at + 1)?)?;
    let lo = hex(*raw.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Option bytes carrying `url` as URLData options of at most `chunk` bytes each.
    fn url_options(url: &[u8], chunk: usize) -> Vec<u8> {
        let mut o = Vec::new();
        for part in url.chunks(chunk) {
            o.push(OPTION_URL_DATA);
            o.push(part.len() as u8);
            o.extend_from_slice(part);
        }
        o
    }

    #[test]
    fn libtorrent_single_option() {
        // What libtorrent appends to its 98-byte announce (CLIENTS.md): 11 bytes.
        let opts = [&[2u8, 9][..], b"/announce"].concat();
        assert_eq!(opts.len(), 11);
        let mut buf = [0u8; URL_CAPACITY];
        assert_eq!(url_data(&opts, &mut buf), Ok(&b"/announce"[..]));
    }

    #[test]
    fn no_options_is_an_empty_url() {
        let mut buf = [0u8; 16];
        assert_eq!(url_data(&[], &mut buf), Ok(&[][..]));
        assert_eq!(
            url_data(&[0, 2, 200], &mut buf),
            Ok(&[][..]),
            "stops at end"
        );
        assert_eq!(url_data(&[1, 1, 1], &mut buf), Ok(&[][..]), "only NOPs");
    }

    #[test]
    fn url_split_over_several_options_is_concatenated_in_order() {
        let url: Vec<u8> = b"/announce?jwt="
            .iter()
            .copied()
            .chain((0..700).map(|i| b"abcdefghij"[i % 10]))
            .collect();
        let opts = url_options(&url, 255);
        assert_eq!(opts.len(), url.len() + 2 * 3, "three URLData options");
        let mut buf = [0u8; URL_CAPACITY];
        assert_eq!(url_data(&opts, &mut buf), Ok(&url[..]));
    }

    #[test]
    fn nops_between_parts_and_end_stops_parsing() {
        let mut opts = vec![1, 1, 2, 4];
        opts.extend_from_slice(b"/ann");
        opts.push(1);
        opts.extend_from_slice(&[2, 5]);
        opts.extend_from_slice(b"ounce");
        opts.push(0);
        opts.extend_from_slice(&[2, 3]);
        opts.extend_from_slice(b"?x=");
        let mut buf = [0u8; 64];
        assert_eq!(url_data(&opts, &mut buf), Ok(&b"/announce"[..]));
    }

    #[test]
    fn unknown_option_types_are_skipped_by_their_length() {
        let mut opts = vec![0x7f, 3, 0, 2, 0]; // data that looks like options is skipped whole
        opts.extend_from_slice(&[2, 2]);
        opts.extend_from_slice(b"/a");
        opts.extend_from_slice(&[0xff, 0]);
        opts.extend_from_slice(&[2, 2]);
        opts.extend_from_slice(b"?b");
        let mut buf = [0u8; 64];
        assert_eq!(url_data(&opts, &mut buf), Ok(&b"/a?b"[..]));
    }

    #[test]
    fn truncated_options_are_refused_with_where() {
        let mut buf = [0u8; 64];
        assert_eq!(
            url_data(&[1, 2], &mut buf),
            Err(Bep41Error::Truncated {
                option_type: 2,
                offset: 1,
                needed: 2,
                left: 1
            }),
            "length byte missing"
        );
        assert_eq!(
            url_data(&[2, 5, b'/', b'a'], &mut buf),
            Err(Bep41Error::Truncated {
                option_type: 2,
                offset: 0,
                needed: 7,
                left: 4
            }),
            "data shorter than its length"
        );
        assert_eq!(
            url_data(&[2, 1, b'/', 9, 4, 0], &mut buf),
            Err(Bep41Error::Truncated {
                option_type: 9,
                offset: 3,
                needed: 6,
                left: 3
            }),
            "unknown option truncated too"
        );
        let e = url_data(&[2, 5, b'/'], &mut buf).unwrap_err().to_string();
        assert!(
            e.contains("0x02") && e.contains("needs 7 bytes, 3 left"),
            "{e}"
        );
    }

    #[test]
    fn url_longer_than_the_buffer_is_refused() {
        let url = [b'a'; 300];
        let opts = url_options(&url, 255);
        let mut small = [0u8; 299];
        assert_eq!(
            url_data(&opts, &mut small),
            Err(Bep41Error::UrlTooLong { capacity: 299 })
        );
        let mut exact = [0u8; 300];
        assert_eq!(url_data(&opts, &mut exact), Ok(&url[..]));
    }

    #[test]
    fn split_path_and_query() {
        let u = Url::split(b"/announce?jwt=abc&x=1");
        assert_eq!(u.path, b"/announce");
        assert_eq!(u.query, b"jwt=abc&x=1");
        let u = Url::split(b"/announce");
        assert_eq!((u.path, u.query), (&b"/announce"[..], &b""[..]));
        let u = Url::split(b"/a?b?c");
        assert_eq!(
            (u.path, u.query),
            (&b"/a"[..], &b"b?c"[..]),
            "first ? splits"
        );
        let u = Url::split(b"");
        assert_eq!((u.path, u.query), (&b""[..], &b""[..]));
    }

    #[test]
    fn query_param_finds_raw_values() {
        let q = b"x=1&jwt=a.b%2Ec&empty=&flag&jwt=second";
        assert_eq!(
            query_param(q, b"jwt"),
            Some(&b"a.b%2Ec"[..]),
            "first one, raw"
        );
        assert_eq!(query_param(q, b"x"), Some(&b"1"[..]));
        assert_eq!(query_param(q, b"empty"), Some(&b""[..]));
        assert_eq!(query_param(q, b"flag"), Some(&b""[..]));
        assert_eq!(query_param(q, b"jw"), None, "no prefix match");
        assert_eq!(query_param(q, b"jwtx"), None);
        assert_eq!(query_param(q, b"missing"), None);
        assert_eq!(query_param(b"", b"jwt"), None);
        assert_eq!(
            query_param(b"&&=", b""),
            Some(&b""[..]),
            "empty key, empty value"
        );
        assert_eq!(
            query_param(b"%6Awt=v", b"jwt"),
            Some(&b"v"[..]),
            "escaped key"
        );
        assert_eq!(
            query_param(b"%6=v&jwt=w", b"%6"),
            None,
            "bad escape never matches"
        );
        assert_eq!(
            query_param(b"a=b=c", b"a"),
            Some(&b"b=c"[..]),
            "first = splits"
        );
        let u = Url::split(b"/announce?jwt=t");
        assert_eq!(u.param(b"jwt"), Some(&b"t"[..]));
    }

    #[test]
    fn percent_decode_into_the_buffer() {
        let mut buf = [0u8; 8];
        assert_eq!(percent_decode(b"plain+", &mut buf), Ok(&b"plain+"[..]));
        assert_eq!(percent_decode(b"%41b%2e%FF", &mut buf), Ok(&b"Ab.\xff"[..]));
        assert_eq!(
            percent_decode(b"ab%4", &mut buf),
            Err(Bep41Error::BadEscape { offset: 2 })
        );
        assert_eq!(
            percent_decode(b"%zz", &mut buf),
            Err(Bep41Error::BadEscape { offset: 0 })
        );
        assert_eq!(
            percent_decode(b"%41bcdefghi", &mut buf),
            Err(Bep41Error::DecodedTooLong { capacity: 8 })
        );
        assert_eq!(
            percent_decode(b"%41bcdefgh", &mut buf),
            Ok(&b"Abcdefgh"[..])
        );
    }

    #[test]
    fn options_follow_the_fixed_announce() {
        let mut packet = vec![7u8; 98];
        assert_eq!(options_of(&packet), b"");
        packet.extend_from_slice(&[2, 1, b'/']);
        assert_eq!(options_of(&packet), &[2, 1, b'/']);
        assert_eq!(options_of(&[1, 2, 3]), b"");
    }
}
