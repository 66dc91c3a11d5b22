//! Who may read and write chunks on the data port: holders of a token the master signed. The
//! key comes from the cluster secret (`AUTH_CODE`) or, without one, from the master at each
//! registration.

use std::sync::RwLock;

use moose_proto::auth::{unix_now, ChunkToken, TokenError, TokenKey, TokenOp};
use moose_proto::{ChunkRef, CsAddr};

#[derive(Default)]
pub struct Access {
    key: RwLock<Option<TokenKey>>,
}

impl Access {
    /// Sets the key tokens are checked with (at each registration with the master).
    pub fn set_key(&self, key: TokenKey) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// Checks `token` for `op` on `chunk`; `rest` is the chain after this server (writes).
    pub fn check(
        &self,
        token: &ChunkToken,
        chunk: ChunkRef,
        op: TokenOp,
        rest: &[CsAddr],
    ) -> Result<(), TokenError> {
        let key = self.key.read().unwrap_or_else(|p| p.into_inner());
        match key.as_ref() {
            None => Err(TokenError::NoKey),
            Some(k) => k.verify(token, chunk, op, rest, unix_now()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The key test stores check tokens with.
    pub(crate) fn key() -> TokenKey {
        TokenKey::from_secret(b"test secret")
    }

    /// A token as the master would sign it: for a write, `rest` is the chain after the first
    /// server.
    pub(crate) fn token(chunk: ChunkRef, write: bool, rest: &[CsAddr]) -> ChunkToken {
        if write {
            let mut chain = vec![CsAddr {
                host: "127.0.0.1".into(),
                port: 1,
            }];
            chain.extend_from_slice(rest);
            key().sign(chunk, TokenOp::Write, &chain, unix_now())
        } else {
            key().sign(chunk, TokenOp::Read, &[], unix_now())
        }
    }
}
