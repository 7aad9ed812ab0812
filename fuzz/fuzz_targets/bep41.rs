//! BEP 41 option bytes and the query helpers hooks use on the URL they carry: any option bytes
//! either give a URL no longer than themselves, which written back as URLData options (in any
//! split) parses to the same URL, or are refused with where; a URL splits back into itself;
//! a found query value is part of its own `name=value` pair; a decoded value, escaped again
//! whole, decodes to itself.
#![no_main]

use hayate_tracker::protocol::bep41::{
    percent_decode, query_param, url_data, Bep41Error, Url, OPTION_NOP, OPTION_URL_DATA,
    URL_CAPACITY,
};
use libfuzzer_sys::fuzz_target;

/// `url` as URLData options of at most `chunk` bytes, a NOP between each.
fn as_options(url: &[u8], chunk: usize) -> Vec<u8> {
    let mut o = Vec::new();
    for part in url.chunks(chunk) {
        o.extend_from_slice(&[OPTION_URL_DATA, part.len() as u8]);
        o.extend_from_slice(part);
        o.push(OPTION_NOP);
    }
    o
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; URL_CAPACITY];
    match url_data(data, &mut buf) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let Bep41Error::Truncated { offset, needed, left, .. } = e {
                assert!(offset < data.len() && left == data.len() - offset && needed > left);
            }
        }
        Ok(url) => {
            let url = url.to_vec();
            assert!(url.len() <= data.len());
            for chunk in [1, 7, 255] {
                let mut again = [0u8; URL_CAPACITY];
                assert_eq!(url_data(&as_options(&url, chunk), &mut again), Ok(&url[..]));
            }
            let mut exact = vec![0u8; url.len()];
            assert_eq!(url_data(data, &mut exact), Ok(&url[..]), "fits exactly");
            if !url.is_empty() {
                let mut short = vec![0u8; url.len() - 1];
                assert!(matches!(
                    url_data(data, &mut short),
                    Err(Bep41Error::UrlTooLong { .. })
                ));
            }
            check_url(&url);
        }
    }
    check_url(data);
});

fn check_url(url: &[u8]) {
    let u = Url::split(url);
    let mut joined = u.path.to_vec();
    if u.path.len() < url.len() {
        joined.push(b'?');
        joined.extend_from_slice(u.query);
    }
    assert_eq!(joined, url, "split loses nothing");
    assert!(!u.path.contains(&b'?'));

    // Look up every key the query has (and one it lacks).
    for pair in u.query.split(|&b| b == b'&') {
        let key = pair.split(|&b| b == b'=').next().unwrap_or(&[]);
        let mut name = [0u8; 256];
        let Ok(name) = percent_decode(key, &mut name) else {
            continue;
        };
        if let Some(value) = query_param(u.query, name) {
            let q = u.query.as_ptr_range();
            let v = value.as_ptr_range();
            assert!(q.start <= v.start && v.end <= q.end, "value borrowed from the query");
            check_decode(value);
        }
    }
    assert_eq!(query_param(b"", b"x"), None);
}

fn check_decode(raw: &[u8]) {
    let mut out = [0u8; URL_CAPACITY];
    if let Ok(decoded) = percent_decode(raw, &mut out) {
        let decoded = decoded.to_vec();
        assert!(decoded.len() <= raw.len());
        let escaped: String = decoded.iter().map(|b| format!("%{b:02x}")).collect();
        let mut again = vec![0u8; decoded.len()];
        assert_eq!(percent_decode(escaped.as_bytes(), &mut again), Ok(&decoded[..]));
    }
}
