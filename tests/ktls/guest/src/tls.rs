//! A real TLS 1.3 session over loopback: rustls does the handshake in user
//! space on plain TCP sockets, then gives up the session's keys
//! (`dangerous_extract_secrets`) so they can be handed to the kernel.
//!
//! One suite is offered (TLS13_AES_128_GCM_SHA256) so the keys always fit
//! `struct tls12_crypto_info_aes_gcm_128`. The server sends no session
//! tickets: after the handshake no TLS record is in flight in either
//! direction, so the sequence numbers rustls reports are the kernel's
//! starting point.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, ConnectionTrafficSecrets, RootCertStore, ServerConfig, ServerConnection,
};

use crate::ktls::CryptoInfo;

/// The certificate's name, and the one the client asks for.
const SERVER_NAME: &str = "localhost";

/// Client and server configurations sharing a fresh self-signed
/// certificate.
pub struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn one_suite_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![provider::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..provider::default_provider()
    })
}

impl Configs {
    pub fn new() -> Result<Configs, String> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| format!("generating the test certificate: {e}"))?;
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));

        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).map_err(|e| format!("trusting the test certificate: {e}"))?;
        let mut client = ClientConfig::builder_with_provider(one_suite_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("client config: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;

        let mut server = ServerConfig::builder_with_provider(one_suite_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("server config: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| format!("server certificate: {e}"))?;
        server.enable_secret_extraction = true;
        server.send_tls13_tickets = 0;
        Ok(Configs { client: Arc::new(client), server: Arc::new(server) })
    }
}

/// One side of an established session, its keys taken out of rustls.
pub struct Endpoint {
    pub socket: TcpStream,
    pub transmit: CryptoInfo,
    pub receive: CryptoInfo,
}

/// Both ends of a session over loopback TCP to `listen`.
pub struct Session {
    pub client: Endpoint,
    pub server: Endpoint,
    /// The suite rustls negotiated, for the report.
    pub suite: String,
}

/// How long the handshake and later reads may block: generous, because
/// the guest runs on an emulated CPU.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts one connection on `listener` (bound by the caller, so the
/// port is known before connecting) and runs a handshake with it.
pub fn handshake(configs: &Configs, listener: &TcpListener) -> Result<Session, String> {
    handshake_after(configs, listener, &|_| Ok(()))
}

/// [`handshake`], calling `connected` on the client socket once TCP is
/// established and before the first handshake byte — where `l7c run`'s
/// `sock_ops` program enrolls a connection.
pub fn handshake_after(
    configs: &Configs,
    listener: &TcpListener,
    connected: &dyn Fn(&TcpStream) -> Result<(), String>,
) -> Result<Session, String> {
    let address: SocketAddr = listener.local_addr().map_err(|e| format!("listener address: {e}"))?;
    let accepting = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
    let server_config = configs.server.clone();
    let server = std::thread::spawn(move || -> Result<(Endpoint, String), String> {
        let (mut socket, _) = accepting.accept().map_err(|e| format!("accept: {e}"))?;
        socket.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut tls =
            Connection::Server(ServerConnection::new(server_config).map_err(|e| format!("server session: {e}"))?);
        drive(&mut tls, &mut socket).map_err(|e| format!("server handshake: {e}"))?;
        let suite = tls.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        let secrets = tls.dangerous_extract_secrets().map_err(|e| format!("server secrets: {e}"))?;
        Ok((endpoint(socket, secrets.tx, secrets.rx)?, suite))
    });

    let client = (|| -> Result<Endpoint, String> {
        let mut socket = TcpStream::connect(address).map_err(|e| format!("connect to {address}: {e}"))?;
        socket.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        connected(&socket)?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let mut tls = Connection::Client(
            ClientConnection::new(configs.client.clone(), name).map_err(|e| format!("client session: {e}"))?,
        );
        drive(&mut tls, &mut socket).map_err(|e| format!("client handshake: {e}"))?;
        let secrets = tls.dangerous_extract_secrets().map_err(|e| format!("client secrets: {e}"))?;
        endpoint(socket, secrets.tx, secrets.rx)
    })();
    let served = server.join().map_err(|_| "the server thread panicked".to_owned())?;
    let client = client?;
    let (server, suite) = served?;
    Ok(Session { client, server, suite })
}

/// Runs the handshake to its end and flushes what it wrote.
fn drive(tls: &mut Connection, socket: &mut (impl Read + Write)) -> std::io::Result<()> {
    while tls.is_handshaking() {
        tls.complete_io(socket)?;
    }
    while tls.wants_write() {
        tls.write_tls(socket)?;
    }
    socket.flush()
}

fn endpoint(
    socket: TcpStream,
    tx: (u64, ConnectionTrafficSecrets),
    rx: (u64, ConnectionTrafficSecrets),
) -> Result<Endpoint, String> {
    Ok(Endpoint {
        socket,
        transmit: CryptoInfo::from_secrets(tx.0, &tx.1)?,
        receive: CryptoInfo::from_secrets(rx.0, &rx.1)?,
    })
}
