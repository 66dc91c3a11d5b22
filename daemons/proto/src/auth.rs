//! Trust on the wire: the cluster secret (`AUTH_CODE`) proved by challenge and response, and
//! the short-lived chunk access tokens the master signs and the chunkservers check.
//!
//! Both use HMAC-SHA256. The secret itself never travels: a registering chunkserver or
//! metalogger answers the nonce of the master's hello with `HMAC(secret, …)` over both sides'
//! nonces, and the master proves it knows the secret the same way in its answer.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::types::{ChunkRef, CsAddr};

/// Length of a nonce in a hello or a registration.
pub const NONCE_LEN: usize = 32;
/// Longest write chain a token may name (the highest goal).
pub const MAX_CHAIN: usize = crate::types::MAX_GOAL as usize;
/// How long a chunk token is valid after the master signs it, in seconds.
pub const TOKEN_LIFETIME_SECS: u64 = 120;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenation of `parts` (each prefixed with its length, so that the
/// split between parts is part of what is signed).
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Comparison whose time does not depend on where the inputs differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fresh random bytes for a nonce or a key.
pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// What a registering chunkserver or metalogger sends to prove the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof {
    /// The peer's own nonce: the master's answer is signed over it.
    pub nonce: Vec<u8>,
    /// `HMAC(secret, "register", role, master nonce, peer nonce)`.
    pub mac: Vec<u8>,
}

/// The proof a peer of `role` ("chunkserver", "metalogger") sends for the master's nonce.
pub fn peer_proof(secret: &[u8], role: &str, master_nonce: &[u8]) -> AuthProof {
    let nonce = random_bytes(NONCE_LEN);
    let mac = mac(
        secret,
        &[b"register", role.as_bytes(), master_nonce, &nonce],
    )
    .to_vec();
    AuthProof { nonce, mac }
}

/// Checks a peer's proof against the master's nonce.
pub fn check_peer_proof(secret: &[u8], role: &str, master_nonce: &[u8], p: &AuthProof) -> bool {
    let want = mac(
        secret,
        &[b"register", role.as_bytes(), master_nonce, &p.nonce],
    );
    p.nonce.len() == NONCE_LEN && same(&want, &p.mac)
}

/// The master's answer to a peer's proof: shows the master knows the secret too.
pub fn master_proof(secret: &[u8], role: &str, master_nonce: &[u8], peer_nonce: &[u8]) -> Vec<u8> {
    mac(
        secret,
        &[b"welcome", role.as_bytes(), peer_nonce, master_nonce],
    )
    .to_vec()
}

/// What a chunk token allows. Any token allows a sync: it only makes data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenOp {
    /// Read the chunk and ask its length.
    #[default]
    Read,
    /// Open a write chain for the chunk.
    Write,
    /// Only sync the chunk: what a writer that may not read the file gets with a chunk's
    /// location, to make durable what it wrote at a version that moved on since (a
    /// truncation gave the chunk a new one).
    Sync,
}

impl TokenOp {
    /// The byte that stands for the operation in the signature.
    fn code(self) -> u8 {
        match self {
            TokenOp::Read => 0,
            TokenOp::Write => 1,
            TokenOp::Sync => 2,
        }
    }
}

/// The master's permission to read, write or sync one version of one chunk until `expires`
/// (seconds since the epoch, on the chunkservers' clock). A write token also names the
/// whole chain the master chose: a chain may only continue along it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChunkToken {
    pub expires: u64,
    pub op: TokenOp,
    pub chain: Vec<CsAddr>,
    /// Truncated HMAC-SHA256 (a fixed array: copying a read token allocates nothing).
    pub mac: [u8; 16],
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no chunk access key yet (the chunkserver is not registered with the master)")]
    NoKey,
    #[error("the token has expired")]
    Expired,
    #[error(
        "the token is for another chunk, version or operation, or was not signed by the master"
    )]
    BadMac,
    #[error("the write chain is not the one the master chose")]
    BadChain,
}

/// The key chunk tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The key derived from the cluster secret (never sent over the wire).
    pub fn from_secret(secret: &[u8]) -> TokenKey {
        TokenKey(mac(secret, &[b"chunk tokens"]).to_vec())
    }

    /// A key the master made up and hands to registered chunkservers (no `AUTH_CODE`).
    pub fn from_bytes(bytes: Vec<u8>) -> TokenKey {
        TokenKey(bytes)
    }

    pub fn random() -> TokenKey {
        TokenKey(random_bytes(32))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn sign_parts(&self, chunk: ChunkRef, op: TokenOp, expires: u64, chain: &[CsAddr]) -> [u8; 16] {
        let mut chain_bytes = Vec::with_capacity(chain.len() * 24);
        for a in chain {
            chain_bytes.extend_from_slice(&(a.host.len() as u32).to_be_bytes());
            chain_bytes.extend_from_slice(a.host.as_bytes());
            chain_bytes.extend_from_slice(&a.port.to_be_bytes());
        }
        let full = mac(
            &self.0,
            &[
                b"chunk",
                &chunk.chunk_id.to_be_bytes(),
                &chunk.version.to_be_bytes(),
                &[op.code()],
                &expires.to_be_bytes(),
                &chain_bytes,
            ],
        );
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Signs a token valid for [`TOKEN_LIFETIME_SECS`] from `now` (seconds since the epoch).
    pub fn sign(&self, chunk: ChunkRef, op: TokenOp, chain: &[CsAddr], now: u64) -> ChunkToken {
        let expires = now + TOKEN_LIFETIME_SECS;
        let chain = if op == TokenOp::Write {
            chain.to_vec()
        } else {
            Vec::new()
        };
        ChunkToken {
            mac: self.sign_parts(chunk, op, expires, &chain),
            expires,
            op,
            chain,
        }
    }

    /// Checks that `token` allows `op` on `chunk` at `now`. For a write, `rest` is the part of
    /// the chain after this server: it must be the tail of the chain the master signed.
    pub fn verify(
        &self,
        token: &ChunkToken,
        chunk: ChunkRef,
        op: TokenOp,
        rest: &[CsAddr],
        now: u64,
    ) -> Result<(), TokenError> {
        if token.op != op || token.chain.len() > MAX_CHAIN {
            return Err(TokenError::BadMac);
        }
        let want = self.sign_parts(chunk, token.op, token.expires, &token.chain);
        if !same(&want, &token.mac) {
            return Err(TokenError::BadMac);
        }
        if now > token.expires {
            return Err(TokenError::Expired);
        }
        if op == TokenOp::Write
            && (rest.len() >= token.chain.len().max(1) || !token.chain.ends_with(rest))
        {
            return Err(TokenError::BadChain);
        }
        Ok(())
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(port: u16) -> CsAddr {
        CsAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    const C: ChunkRef = ChunkRef {
        chunk_id: 7,
        version: 3,
    };

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2 (no length prefixes: checked through the raw HMAC).
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn proofs_need_the_same_secret() {
        let master_nonce = random_bytes(NONCE_LEN);
        let p = peer_proof(b"s3cret", "chunkserver", &master_nonce);
        assert!(check_peer_proof(
            b"s3cret",
            "chunkserver",
            &master_nonce,
            &p
        ));
        assert!(!check_peer_proof(
            b"other",
            "chunkserver",
            &master_nonce,
            &p
        ));
        assert!(!check_peer_proof(
            b"s3cret",
            "metalogger",
            &master_nonce,
            &p
        ));
        let replay_nonce = random_bytes(NONCE_LEN);
        assert!(!check_peer_proof(
            b"s3cret",
            "chunkserver",
            &replay_nonce,
            &p
        ));
        assert_ne!(
            master_proof(b"s3cret", "chunkserver", &master_nonce, &p.nonce),
            master_proof(b"other", "chunkserver", &master_nonce, &p.nonce)
        );
    }

    #[test]
    fn tokens_bind_chunk_version_operation_expiry_and_chain() {
        let key = TokenKey::random();
        let chain = [cs(1), cs(2), cs(3)];
        let w = key.sign(C, TokenOp::Write, &chain, 1000);
        assert_eq!(key.verify(&w, C, TokenOp::Write, &chain[1..], 1000), Ok(()));
        assert_eq!(key.verify(&w, C, TokenOp::Write, &chain[2..], 1100), Ok(()));
        assert_eq!(key.verify(&w, C, TokenOp::Write, &[], 1100), Ok(()));
        assert_eq!(
            key.verify(&w, C, TokenOp::Write, &[cs(9)], 1000),
            Err(TokenError::BadChain)
        );
        assert_eq!(
            key.verify(&w, C, TokenOp::Write, &chain, 1000),
            Err(TokenError::BadChain)
        );
        assert_eq!(
            key.verify(&w, C, TokenOp::Read, &[], 1000),
            Err(TokenError::BadMac)
        );
        let other_version = ChunkRef { version: 4, ..C };
        assert_eq!(
            key.verify(&w, other_version, TokenOp::Write, &[], 1000),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            key.verify(&w, C, TokenOp::Write, &[], 1000 + TOKEN_LIFETIME_SECS + 1),
            Err(TokenError::Expired)
        );
        let mut longer = w.clone();
        longer.expires += 1000;
        assert_eq!(
            key.verify(&longer, C, TokenOp::Write, &[], 1000),
            Err(TokenError::BadMac)
        );
        let mut rerouted = w.clone();
        rerouted.chain[2] = cs(9);
        assert_eq!(
            key.verify(&rerouted, C, TokenOp::Write, &[cs(9)], 1000),
            Err(TokenError::BadMac)
        );
        let r = key.sign(C, TokenOp::Read, &chain, 1000);
        assert!(r.chain.is_empty());
        assert_eq!(key.verify(&r, C, TokenOp::Read, &[], 1000), Ok(()));
        assert_eq!(
            TokenKey::random().verify(&r, C, TokenOp::Read, &[], 1000),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            key.verify(&ChunkToken::default(), C, TokenOp::Read, &[], 0),
            Err(TokenError::BadMac)
        );
        let s = key.sign(C, TokenOp::Sync, &chain, 1000);
        assert!(s.chain.is_empty());
        assert_eq!(key.verify(&s, C, TokenOp::Sync, &[], 1000), Ok(()));
        for op in [TokenOp::Read, TokenOp::Write] {
            assert_eq!(key.verify(&s, C, op, &[], 1000), Err(TokenError::BadMac));
            // Relabelled, it no longer matches its signature.
            let relabelled = ChunkToken { op, ..s.clone() };
            assert_eq!(
                key.verify(&relabelled, C, op, &[], 1000),
                Err(TokenError::BadMac)
            );
        }
    }
}
