//! Asking the master for its status through the host it runs on (an SSH direct-tcpip
//! channel for remote hosts), keeping the Admin connection open between polls.

use std::time::Duration;

use moose_admin::{AdminClient, AdminError};
use moose_proto::msg::ClusterInfo;

use crate::engine::host::{HostError, Machine, Stream};

/// How long each step of a query may take (handshake, request, answer).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    Host(HostError),
    #[error("{0}")]
    Admin(AdminError),
}

/// A master connection that reconnects when a query fails.
pub struct MasterLink {
    port: u16,
    peer: String,
    conn: Option<AdminClient<Box<dyn Stream>>>,
}

impl MasterLink {
    pub fn new(address: &str, port: u16) -> MasterLink {
        MasterLink {
            port,
            peer: format!("master {address}:{port}"),
            conn: None,
        }
    }

    /// Asks the master through `host`, reusing the open connection when there is one.
    pub async fn query(&mut self, host: &dyn Machine) -> Result<ClusterInfo, MasterError> {
        if let Some(c) = self.conn.as_mut() {
            match c.cluster_info().await {
                Ok(info) => return Ok(info),
                Err(_) => self.conn = None,
            }
        }
        let stream = host.connect(self.port).await.map_err(MasterError::Host)?;
        let mut c = AdminClient::over(stream, &self.peer, QUERY_TIMEOUT)
            .await
            .map_err(MasterError::Admin)?;
        let info = c.cluster_info().await.map_err(MasterError::Admin)?;
        self.conn = Some(c);
        Ok(info)
    }
}
