//! SPDY/3 header blocks: a count, then length-prefixed name/value pairs, compressed with
//! one zlib stream per direction of a connection that starts from the SPDY/3 dictionary and
//! is sync-flushed after every block.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;
use super::SpdyError;

/// The most a decompressed header block may hold.
const MAX_BLOCK: usize = 1 << 20;

/// A frame's headers, in the order they came; names are lower case on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a header (the name is lower-cased, as SPDY/3 wants).
    pub fn add(&mut self, name: &str, value: &str) -> &mut Headers {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of `name` (case-insensitive); a NUL-joined value gives its first part.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.split('\0').next())
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed block.
    pub fn to_block(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block.
    pub fn from_block(block: &[u8]) -> Result<Headers, SpdyError> {
        let mut rest = block;
        let count = take_u32(&mut rest)? as usize;
        if count > rest.len() / 8 {
            return Err(SpdyError::Protocol("header count larger than the block"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_str(&mut rest)?;
            let value = take_str(&mut rest)?;
            if name.is_empty() {
                return Err(SpdyError::Protocol("empty header name"));
            }
            pairs.push((name, value));
        }
        if !rest.is_empty() {
            return Err(SpdyError::Protocol("trailing bytes after the header block"));
        }
        Ok(Headers(pairs))
    }
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, SpdyError> {
    let (head, tail) = rest
        .split_first_chunk::<4>()
        .ok_or(SpdyError::Protocol("short header block"))?;
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(rest: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err(SpdyError::Protocol("header string longer than the block"));
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(s.to_vec()).map_err(|_| SpdyError::Protocol("header is not UTF-8"))
}

/// The sending side's compressor (one per connection direction).
pub struct Deflater {
    z: Compress,
    primed: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new()
    }
}

impl Deflater {
    /// A fresh compressor.
    pub fn new() -> Deflater {
        Deflater {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Compresses `headers` as the next block of the stream.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        if !self.primed {
            self.z
                .set_dictionary(&DICTIONARY)
                .map_err(|_| SpdyError::Protocol("zlib refused the dictionary"))?;
            self.primed = true;
        }
        let block = headers.to_block();
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|_| SpdyError::Protocol("zlib compression failed"))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // A sync flush is complete when the input is used and zlib left room unused.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving side's decompressor (one per connection direction).
pub struct Inflater {
    z: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// A fresh decompressor.
    pub fn new() -> Inflater {
        Inflater {
            z: Decompress::new(true),
        }
    }

    /// Decompresses the next block of the stream into headers.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            if out.len() > MAX_BLOCK {
                return Err(SpdyError::Protocol("header block too large"));
            }
            let before = self.z.total_in();
            let status = match self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(status) => status,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&DICTIONARY)
                        .map_err(|_| SpdyError::Protocol("zlib refused the dictionary"))?;
                    Status::Ok
                }
                Err(_) => return Err(SpdyError::Protocol("corrupt header block")),
            };
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            if status == Status::StreamEnd {
                return Err(SpdyError::Protocol("header stream ended"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() < out.capacity() {
                return Err(SpdyError::Protocol("corrupt header block"));
            }
        }
        Headers::from_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_through_one_stream_each_way() {
        let mut d = Deflater::new();
        let mut i = Inflater::new();
        for n in 0..5 {
            let mut h = Headers::new();
            h.add("streamType", "stdout").add("port", &n.to_string());
            let c = d.compress(&h).unwrap();
            let back = i.decompress(&c).unwrap();
            assert_eq!(back.get("streamtype"), Some("stdout"));
            assert_eq!(back.get("Port"), Some(n.to_string().as_str()));
        }
        let empty = d.compress(&Headers::new()).unwrap();
        assert!(i.decompress(&empty).unwrap().is_empty());
    }

    #[test]
    fn a_block_shorter_than_its_count_is_refused() {
        assert!(Headers::from_block(&[0, 0, 0, 9, 0, 0]).is_err());
        assert!(Headers::from_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0, 0]).is_err());
    }
}
