//! TLS for the receiver: the server certificate from the `kubernetes.io/tls` Secret
//! `job-sink-server-tls` of the system namespace (upstream's name; the keys cert-manager
//! writes: `tls.crt`, `tls.key`, `ca.crt`), followed live so that a rotated certificate
//! serves from the next handshake on, and the HTTPS listener's TLS configuration ([`acceptor`]).
//!
//! The controller reads the same watch for the `CACerts` of the sinks' https addresses.

mod secret;
mod server;

pub use secret::{ServerTls, TlsState, parse_key_pair};
pub use server::{acceptor, server_config};

/// Name of the Secret holding the receiver's certificate (upstream's).
pub const DEFAULT_SECRET_NAME: &str = "job-sink-server-tls";
/// Key of the certificate chain in the Secret.
pub const TLS_CRT: &str = "tls.crt";
/// Key of the private key in the Secret.
pub const TLS_KEY: &str = "tls.key";
/// Key of the CA bundle in the Secret, advertised as the addresses' `CACerts`.
pub const CA_CRT: &str = "ca.crt";
