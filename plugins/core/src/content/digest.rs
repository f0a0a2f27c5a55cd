//! Content digests, `<algorithm>:<hex>`, as go-digest parses them: the algorithm must be one we
//! can compute and the hex part must be lowercase and exactly as long as that algorithm's sum.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::error::ContentError;

/// A digest algorithm the store can compute and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `sha256`, the canonical algorithm (what a writer hashes with when nothing else is asked).
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
}

impl Algorithm {
    /// Every supported algorithm, canonical first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512];

    /// The algorithm's name as it appears in digests and under `blobs/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// How many hex characters a digest of this algorithm has.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    /// The algorithm with this name, if supported.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest such as `sha256:e3b0…b855`.
///
/// Only a parsed `Digest` ever becomes a path under `blobs/`: its algorithm is one of
/// [`Algorithm::ALL`] and its hex part is lowercase hex of the exact length, so it cannot hold a
/// `/` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from an algorithm and its hex sum, validating the hex part.
    pub fn from_hex(alg: Algorithm, hex: &str) -> Result<Digest, ContentError> {
        let invalid = |reason| ContentError::InvalidDigest {
            input: format!("{alg}:{hex}"),
            reason,
        };
        if hex.len() != alg.hex_len() {
            return Err(invalid("invalid checksum digest length"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("invalid checksum digest format"));
        }
        Ok(Digest {
            alg,
            hex: hex.to_owned(),
        })
    }

    /// The digest of `data` under `alg`.
    pub fn compute(alg: Algorithm, data: &[u8]) -> Digest {
        let mut digester = Digester::new(alg);
        digester.update(data);
        digester.digest()
    }

    /// The canonical (sha256) digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::compute(Algorithm::Sha256, data)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The hex sum, without the `<alg>:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = ContentError;

    fn from_str(s: &str) -> Result<Digest, ContentError> {
        let invalid = |reason| ContentError::InvalidDigest {
            input: s.to_owned(),
            reason,
        };
        let (name, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("invalid checksum digest format"))?;
        if name.is_empty() || hex.is_empty() {
            return Err(invalid("invalid checksum digest format"));
        }
        let alg =
            Algorithm::from_name(name).ok_or_else(|| invalid("unsupported digest algorithm"))?;
        Digest::from_hex(alg, hex).map_err(|e| match e {
            // Report the whole input, not the re-joined parts.
            ContentError::InvalidDigest { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = ContentError;

    fn try_from(s: String) -> Result<Digest, ContentError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A running hash of one algorithm, fed as bytes pass (go-digest's `Digester`).
#[derive(Clone)]
pub struct Digester {
    state: HashState,
}

#[derive(Clone)]
enum HashState {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Digester {
    /// A fresh digester for `alg`.
    pub fn new(alg: Algorithm) -> Digester {
        let state = match alg {
            Algorithm::Sha256 => HashState::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => HashState::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => HashState::Sha512(sha2::Sha512::new()),
        };
        Digester { state }
    }

    /// The algorithm this digester computes.
    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            HashState::Sha256(_) => Algorithm::Sha256,
            HashState::Sha384(_) => Algorithm::Sha384,
            HashState::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            HashState::Sha256(h) => h.update(data),
            HashState::Sha384(h) => h.update(data),
            HashState::Sha512(h) => h.update(data),
        }
    }

    /// Forgets everything fed so far.
    pub fn reset(&mut self) {
        *self = Digester::new(self.algorithm());
    }

    /// The digest of the bytes fed so far; the digester keeps running.
    pub fn digest(&self) -> Digest {
        let hex = match &self.state {
            HashState::Sha256(h) => hex::encode(h.clone().finalize()),
            HashState::Sha384(h) => hex::encode(h.clone().finalize()),
            HashState::Sha512(h) => hex::encode(h.clone().finalize()),
        };
        Digest {
            alg: self.algorithm(),
            hex,
        }
    }
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digester")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::{Classify, ErrorKind};

    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(format!("{d:?}"), format!("Digest({EMPTY_SHA256})"));
    }

    #[test]
    fn parses_sha512_and_sha384() {
        let d512 = Digest::compute(Algorithm::Sha512, b"abc");
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(d512.to_string().parse::<Digest>().unwrap(), d512);
        assert!(d512.hex().starts_with("ddaf35a193617aba"));
        let d384 = Digest::compute(Algorithm::Sha384, b"abc");
        assert_eq!(d384.hex().len(), 96);
        assert_eq!(d384.to_string().parse::<Digest>().unwrap(), d384);
    }

    #[test]
    fn refuses_malformed_digests() {
        let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
        let short = &EMPTY_SHA256[..EMPTY_SHA256.len() - 1];
        let sha512_with_sha256_len = EMPTY_SHA256.replace("sha256", "sha512");
        let traversal = format!("sha256:../../{}", &EMPTY_SHA256[13..]);
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            short,
            upper.as_str(),
            sha512_with_sha256_len.as_str(),
            traversal.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains("invalid digest"), "{err}");
        }
    }

    #[test]
    fn digester_streams_and_resets() {
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(b"hello ");
        d.update(b"world");
        assert_eq!(d.digest(), Digest::sha256_of(b"hello world"));
        // digest() does not consume the state.
        d.update(b"!");
        assert_eq!(d.digest(), Digest::sha256_of(b"hello world!"));
        d.reset();
        assert_eq!(d.digest(), Digest::sha256_of(b""));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Digest::sha256_of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:nope\"").is_err());
    }

    #[test]
    fn orders_by_algorithm_then_hex() {
        let a = Digest::from_hex(Algorithm::Sha256, &"0".repeat(64)).unwrap();
        let b = Digest::from_hex(Algorithm::Sha256, &"1".repeat(64)).unwrap();
        let c = Digest::from_hex(Algorithm::Sha512, &"0".repeat(128)).unwrap();
        let mut v = vec![c.clone(), b.clone(), a.clone()];
        v.sort();
        assert_eq!(v, vec![a, b, c]);
    }
}
