//! Checking content against a hash: the SHA-256 davdrive records of a fully cached file,
//! and the checksums a server may announce (`oc:checksums`). When they are checked is
//! the core's decision (`fs/revalidate.rs`).

use std::io;
use std::path::Path;

use super::open_nofollow;

/// SHA-256 (hex) of the first `len` bytes of the file at `path`, which must have them.
pub fn sha256_prefix(path: &Path, len: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let f = open_nofollow(path)?;
    let mut h = Sha256::new();
    let n = io::copy(&mut f.take(len), &mut h)?;
    if n != len {
        return Err(io::Error::other(format!(
            "{}: has {n} bytes, {len} expected",
            path.display()
        )));
    }
    Ok(hex(&h.finalize()))
}

/// Checks the first `len` bytes of `path` against the strongest checksum in `spec`
/// (`oc:checksums`: "SHA1:… MD5:… ADLER32:…", SHA256 too). `None` when `spec` holds no
/// algorithm known here.
pub fn checksum_matches(spec: &str, path: &Path, len: u64) -> io::Result<Option<bool>> {
    use sha2::Digest;
    use std::io::Read;
    let mut best: Option<(&str, String)> = None;
    for part in spec.split_whitespace() {
        let Some((algo, value)) = part.split_once(':') else {
            continue;
        };
        let algo = algo.to_ascii_uppercase();
        let rank = |a: &str| ["MD5", "SHA1", "SHA256"].iter().position(|x| *x == a);
        let Some(r) = rank(&algo) else { continue };
        if best.as_ref().is_none_or(|(b, _)| rank(b).unwrap_or(0) < r) {
            let name = ["MD5", "SHA1", "SHA256"][r];
            best = Some((name, value.to_ascii_lowercase()));
        }
    }
    let Some((algo, want)) = best else {
        return Ok(None);
    };
    let mut f = open_nofollow(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    let mut sha1 = sha1::Sha1::new();
    let mut sha256 = sha2::Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match algo {
            "MD5" => md5.update(&buf[..n]),
            "SHA1" => sha1.update(&buf[..n]),
            _ => sha256.update(&buf[..n]),
        }
    }
    let got = match algo {
        "MD5" => hex(&md5.finalize()),
        "SHA1" => hex(&sha1.finalize()),
        _ => hex(&sha256.finalize()),
    };
    Ok(Some(got == want))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_offered_checksum_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sha1 = "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d";
        let md5 = "MD5:900150983cd24fb0d6963f7d28e17f72";
        let both = format!("{sha1} {md5}");
        assert_eq!(checksum_matches(&both, &p, 3).unwrap(), Some(true));
        assert_eq!(checksum_matches(md5, &p, 3).unwrap(), Some(true));
        // A wrong SHA1 beside a right MD5: SHA1 is the stronger, it decides.
        let wrong = format!("{md5} SHA1:0000000000000000000000000000000000000000");
        assert_eq!(checksum_matches(&wrong, &p, 3).unwrap(), Some(false));
        assert_eq!(checksum_matches("ADLER32:024d0127", &p, 3).unwrap(), None);
        assert_eq!(checksum_matches("", &p, 3).unwrap(), None);
    }
}
