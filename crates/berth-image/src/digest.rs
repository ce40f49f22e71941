//! Content digests (`sha256:<64 hex>`), validated before any path is built
//! from them, and a hasher that verifies content while it streams.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>")]
    Malformed(String),
    #[error("invalid digest {0:?}: unsupported algorithm (sha256 and sha512 are)")]
    Algorithm(String),
    #[error("invalid digest {0:?}: the hex part must be {1} lowercase hex characters")]
    Hex(String, usize),
}

/// The digest algorithms berth accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest. Its hex part is exactly the algorithm's length of
/// `[0-9a-f]`, so it is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algo: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256:…` shortened to the 12 hex characters Docker shows.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The relative path of this digest in a store: `sha256/<hex>`.
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from(self.algo.name()).join(&self.hex)
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algo: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// Build from an algorithm and a hex string, validating it.
    pub fn new(algo: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let full = format!("{}:{hex}", algo.name());
        if hex.len() != algo.hex_len()
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::Hex(full, algo.hex_len()));
        }
        Ok(Digest {
            algo,
            hex: hex.to_string(),
        })
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        let algo = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::Algorithm(s.to_string())),
        };
        Digest::new(algo, hex).map_err(|_| DigestError::Hex(s.to_string(), algo.hex_len()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream by, for the algorithm of an expected digest.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: Algorithm) -> Hasher {
        match algo {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algo: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algo: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    count: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R, algo: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Some(Hasher::new(algo)),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything read; call once, after reading to the end.
    pub fn digest(&mut self) -> Option<Digest> {
        self.hasher.take().map(Hasher::finish)
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_show() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(
            d.rel_path(),
            PathBuf::from(format!("sha256/{}", &EMPTY[7..]))
        );
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn hostile_digests_are_refused() {
        for bad in [
            "sha256:../../x",
            "sha256:",
            "sha256",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550",
            "../sha256:e3b0",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader() {
        let mut r = HashingReader::new(&b"hello"[..], Algorithm::Sha256);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(r.count(), 5);
        assert_eq!(r.digest().unwrap(), Digest::sha256_of(b"hello"));
    }
}
