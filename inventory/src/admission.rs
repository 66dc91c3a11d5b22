//! Whether the master will admit each client host of the inventory, judged by the master's own
//! code ([`moose_formats::admission`]) on the inventory's `[[exports]]`: validation, the
//! console's Exports pane and `moosectl doctor` all ask here or there, never a copy of it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use moose_formats::admission::{ids_unresolved, password_proof, ExportLine, Exports, Refusal};
use moose_formats::exports::ExportsFile;

use crate::model::{Client, Export};
use crate::render::exports_lines;

/// A challenge for proving a client's password to ourselves, as the master would check it.
const CHALLENGE: [u8; 32] = [0x5a; 32];

/// The `[[exports]]` as the master will judge them: line N is the N-th `[[exports]]`.
pub fn exports_admission<'a>(exports: impl IntoIterator<Item = &'a Export>) -> Exports {
    let file = ExportsFile {
        lines: exports_lines(exports),
    };
    // Names are not resolved here, so reading cannot fail.
    Exports::from_file(Path::new("[[exports]]"), file, &ids_unresolved).unwrap_or_default()
}

/// The password a client mounts with (`password = ...` or `-o mfspassword=...`).
pub fn client_password(client: &Client) -> Option<&str> {
    client.password.as_deref().or_else(|| {
        client
            .options
            .iter()
            .find_map(|o| o.strip_prefix("mfspassword="))
    })
}

/// The line that admits a client at `address` (an IPv4 address; `None` for a name, which
/// only the master's view of the connection can judge), or why none does.
pub fn admit_client<'e>(
    exports: &'e Exports,
    address: &str,
    client: &Client,
) -> Option<Result<&'e ExportLine, Refusal>> {
    let ip: Ipv4Addr = address.parse().ok()?;
    let proof = client_password(client).map(|p| password_proof(&CHALLENGE, p));
    Some(exports.admit(
        IpAddr::V4(ip),
        &client.subfolder,
        proof.as_deref(),
        proof.as_ref().map(|_| &CHALLENGE[..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(address: &str, path: &str, options: &[&str]) -> Export {
        Export {
            address: address.into(),
            path: path.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn client(subfolder: &str, password: Option<&str>) -> Client {
        Client {
            mount: "/mnt/m".into(),
            subfolder: subfolder.into(),
            options: Vec::new(),
            password: password.map(Into::into),
        }
    }

    #[test]
    fn the_masters_choice_among_lines() {
        let ex = exports_admission(&[
            export("*", "/", &["ro"]),
            export("10.0.0.0/8", "/data", &["rw", "alldirs"]),
            export("10.0.0.5", "/", &["rw", "password=s3"]),
        ]);
        let line = |addr, c: &Client| admit_client(&ex, addr, c).unwrap().map(|l| l.line);
        assert_eq!(line("192.168.1.1", &client("/", None)), Ok(1));
        assert_eq!(line("10.1.1.1", &client("/data/x", None)), Ok(2));
        // The password line wins when the password is right; without it, the ro line.
        assert_eq!(line("10.0.0.5", &client("/", Some("s3"))), Ok(3));
        assert_eq!(line("10.0.0.5", &client("/", None)), Ok(1));
        assert!(admit_client(&ex, "client.example", &client("/", None)).is_none());
    }

    #[test]
    fn refusals_say_which_rule() {
        let ex = exports_admission(&[
            export("10.0.0.0/24", "/data", &["rw"]),
            export("10.0.1.0/24", "/", &["rw", "password=s3"]),
        ]);
        let refusal = |addr, c: &Client| admit_client(&ex, addr, c).unwrap().unwrap_err();
        assert!(matches!(
            refusal("10.9.9.9", &client("/", None)),
            Refusal::NoAddress { .. }
        ));
        assert!(matches!(
            refusal("10.0.0.9", &client("/other", None)),
            Refusal::NoPath { .. }
        ));
        assert!(matches!(
            refusal("10.0.1.9", &client("/", Some("wrong"))),
            Refusal::Password { .. }
        ));
    }
}
