//! Password proof for a challenge: `md5(challenge[0..16] ‖ md5(password) ‖ challenge[16..32])`.

use md5::{Digest, Md5};

/// Length of the master's challenge.
pub const CHALLENGE_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master sent a challenge of {0} bytes, expected {CHALLENGE_LEN}")]
pub struct BadChallenge(pub usize);

/// The proof the master expects for `password` and its `challenge`.
pub fn password_proof(challenge: &[u8], password: &str) -> Result<Vec<u8>, BadChallenge> {
    if challenge.len() != CHALLENGE_LEN {
        return Err(BadChallenge(challenge.len()));
    }
    let pass_digest = Md5::digest(password.as_bytes());
    let mut h = Md5::new();
    h.update(&challenge[..16]);
    h.update(pass_digest);
    h.update(&challenge[16..]);
    Ok(h.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn md5_known_answer() {
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn proof_matches_reference() {
        // Reference computed independently with Python's hashlib.
        let challenge: Vec<u8> = (0u8..32).collect();
        let proof = password_proof(&challenge, "secret").unwrap();
        assert_eq!(hex(&proof), "52e26806aa4187d43d08d5bc6b284a96");
    }

    #[test]
    fn short_challenge_is_refused() {
        assert_eq!(password_proof(&[0; 16], "x"), Err(BadChallenge(16)));
    }
}
