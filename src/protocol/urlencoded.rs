//! Splitting a URL query (`a=1&b=2`) into its raw pairs, for the HTTP announce parser and for the
//! query a UDP announce carries in BEP 41 URL data. Nothing is decoded here: callers decode only
//! the keys and values they use.
//!
//! The separators are found with `memchr` rather than a byte-at-a-time split because one value,
//! a JWT, is hundreds of bytes: scanning it a byte at a time was most of a cached JWT check's
//! cost (`cargo bench --bench policy`, `bep41_jwt_from_3_options`).

use memchr::memchr;

/// The non-empty `key=value` pairs of `query` in order, both still percent-escaped. A pair with
/// no `=` is a key with an empty value.
pub fn pairs(query: &[u8]) -> Pairs<'_> {
    Pairs { rest: Some(query) }
}

/// Iterator returned by [`pairs`].
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let pair = match memchr(b'&', rest) {
                Some(end) => {
                    self.rest = Some(&rest[end + 1..]);
                    &rest[..end]
                }
                None => {
                    self.rest = None;
                    rest
                }
            };
            if pair.is_empty() {
                continue;
            }
            return Some(match memchr(b'=', pair) {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_in_order_skipping_empty_pairs() {
        let got: Vec<_> = pairs(b"&a=1&&flag&b=x=y&=v&c=&").collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"a", b"1"),
            (b"flag", b""),
            (b"b", b"x=y"),
            (b"", b"v"),
            (b"c", b""),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn empty_query_has_no_pairs() {
        assert_eq!(pairs(b"").count(), 0);
        assert_eq!(pairs(b"&&&").count(), 0);
    }
}
