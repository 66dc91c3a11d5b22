//! What the master trusts: the cluster secret that chunkservers and metaloggers prove at
//! registration, and the key of the chunk access tokens it gives clients and chunkservers.

use moose_proto::auth::{self, AuthProof, ChunkToken, TokenKey, TokenOp};
use moose_proto::{ChunkRef, CsAddr};

pub struct Trust {
    /// `AUTH_CODE`, when set.
    secret: Option<Vec<u8>>,
    /// Derived from the secret, or made up at start (and handed to registered chunkservers).
    key: TokenKey,
}

impl Trust {
    pub fn new(secret: Option<String>) -> Trust {
        let secret = secret.map(String::into_bytes);
        let key = match &secret {
            Some(s) => TokenKey::from_secret(s),
            None => TokenKey::random(),
        };
        Trust { secret, key }
    }

    /// Checks the proof a registering peer of `role` sent for `nonce` (the nonce of our
    /// hello). Returns our own proof for the answer, or the reason for a refusal.
    pub fn check_registration(
        &self,
        role: &str,
        nonce: &[u8],
        proof: Option<&AuthProof>,
    ) -> Result<Option<Vec<u8>>, String> {
        match (&self.secret, proof) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!(
                "this master requires the cluster secret and the {role} sent none; set AUTH_CODE \
                 in the {role}'s config to the master's AUTH_CODE"
            )),
            (None, Some(_)) => Err(format!(
                "the {role} has an AUTH_CODE but this master has none; set the same AUTH_CODE in \
                 moose-master.cfg, or remove it from the {role}'s config"
            )),
            (Some(secret), Some(p)) => {
                if auth::check_peer_proof(secret, role, nonce, p) {
                    Ok(Some(auth::master_proof(secret, role, nonce, &p.nonce)))
                } else {
                    Err(format!(
                        "wrong cluster secret: the {role}'s AUTH_CODE differs from the master's"
                    ))
                }
            }
        }
    }

    /// The token key a registered chunkserver gets over the wire: only when there is no
    /// secret it could derive the key from.
    pub fn key_for_chunkservers(&self) -> Option<Vec<u8>> {
        match self.secret {
            Some(_) => None,
            None => Some(self.key.bytes().to_vec()),
        }
    }

    pub fn read_token(&self, chunk: ChunkRef) -> ChunkToken {
        self.key.sign(chunk, TokenOp::Read, &[], auth::unix_now())
    }

    /// A token that only lets its holder sync the chunk (see [`TokenOp::Sync`]).
    pub fn sync_token(&self, chunk: ChunkRef) -> ChunkToken {
        self.key.sign(chunk, TokenOp::Sync, &[], auth::unix_now())
    }

    pub fn write_token(&self, chunk: ChunkRef, chain: &[CsAddr]) -> ChunkToken {
        self.key
            .sign(chunk, TokenOp::Write, chain, auth::unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_outcomes() {
        let nonce = auth::random_bytes(auth::NONCE_LEN);
        let open = Trust::new(None);
        let closed = Trust::new(Some("s3cret".into()));
        let good = auth::peer_proof(b"s3cret", "chunkserver", &nonce);
        let bad = auth::peer_proof(b"guess", "chunkserver", &nonce);
        assert_eq!(
            open.check_registration("chunkserver", &nonce, None),
            Ok(None)
        );
        assert!(open
            .check_registration("chunkserver", &nonce, Some(&good))
            .unwrap_err()
            .contains("has an AUTH_CODE but this master has none"));
        assert!(closed
            .check_registration("chunkserver", &nonce, None)
            .unwrap_err()
            .contains("set AUTH_CODE"));
        assert!(closed
            .check_registration("chunkserver", &nonce, Some(&bad))
            .unwrap_err()
            .contains("wrong cluster secret"));
        let answer = closed
            .check_registration("chunkserver", &nonce, Some(&good))
            .unwrap()
            .unwrap();
        assert_eq!(
            answer,
            auth::master_proof(b"s3cret", "chunkserver", &nonce, &good.nonce)
        );
        assert!(open.key_for_chunkservers().is_some());
        assert!(closed.key_for_chunkservers().is_none());
    }
}
