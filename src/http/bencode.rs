//! A bencode writer, just large enough for tracker replies: integers, byte strings, lists and
//! dictionaries written straight into one buffer. The tracker only ever writes bencode, never
//! reads it, so a few lines here replace a serialisation crate. Dictionary keys must be written
//! in sorted order (bencode requires it); the reply code does that by construction.

#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }

    pub fn list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }

    /// Ends the innermost dictionary or list.
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        self.buf.push(b'i');
        self.decimal(n);
        self.buf.push(b'e');
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.decimal(b.len() as i64);
        self.buf.push(b':');
        self.buf.extend_from_slice(b);
        self
    }

    /// A byte string written in pieces: its total length up front, then the pieces through
    /// [`Writer::raw`]. Saves building a compact peer list in a buffer of its own.
    pub fn bytes_header(&mut self, len: usize) -> &mut Self {
        self.decimal(len as i64);
        self.buf.push(b':');
        self
    }

    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// A dictionary key and an integer value.
    pub fn key_int(&mut self, key: &str, n: i64) -> &mut Self {
        self.bytes(key.as_bytes()).int(n)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn decimal(&mut self, n: i64) {
        // `write!` into a Vec cannot fail.
        use std::io::Write;
        let _ = write!(self.buf, "{n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_kind() {
        let mut w = Writer::default();
        w.dict()
            .key_int("a", -3)
            .bytes(b"b")
            .list()
            .bytes(b"")
            .bytes(&[0, 255])
            .end()
            .bytes(b"c")
            .bytes_header(4)
            .raw(b"xy")
            .raw(b"zw")
            .end();
        assert_eq!(w.finish(), b"d1:ai-3e1:bl0:2:\x00\xffe1:c4:xyzwe");
    }
}
