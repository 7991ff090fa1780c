//! Kernel TLS offload: after rustls' handshake, the session's keys go to
//! the kernel (`TCP_ULP` "tls", then `TLS_TX` and `TLS_RX`), and the
//! connection carries on as a plain socket: replies through the same
//! `sluice_io::Sender` as PLAINTEXT (Fetch's records by sendfile/splice,
//! encrypted by the kernel), requests read decrypted with `recvmsg`.
//!
//! No byte may be lost in the hand-over. A Kafka client sends its first
//! request right after its Finished, so the handshake is read through a
//! [`Cork`] that hands rustls one whole record at a time and reads nothing
//! once the handshake is over: every later record stays in the socket for
//! the kernel to decrypt. Where rustls still holds anything (plaintext it
//! decrypted, a part of a record, records to send), the connection stays
//! in user space.
//!
//! The syscalls and the uapi structs are `sluice_io::ktls`'s; this module
//! maps rustls' secrets onto them and decides, per connection, which way
//! it goes.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::{ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};
use sluice_io::ktls::{self, Cipher, CryptoInfo, Direction, Received, Version};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A TLS stream whose handshake was read through a [`Cork`].
pub(super) type TlsConn = TlsStream<Cork<TcpStream>>;

/// Reads the handshake one TLS record at a time. After each whole record it
/// returns `Pending` once (waking itself at once), which ends tokio-rustls'
/// read loop so it looks at `is_handshaking()` before asking for more: the
/// record after the client's Finished is never read. Uncorked, it passes
/// reads straight through.
pub(super) struct Cork<S> {
    io: S,
    corked: bool,
    header: [u8; 5],
    /// Header bytes read of the current record.
    have: usize,
    /// Body bytes of the current record still to read.
    body_left: usize,
    pause: bool,
}

impl<S> Cork<S> {
    pub(super) fn new(io: S, corked: bool) -> Cork<S> {
        Cork {
            io,
            corked,
            header: [0; 5],
            have: 0,
            body_left: 0,
            pause: false,
        }
    }

    /// Whether rustls has been given only whole records.
    pub(super) fn at_record_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }

    pub(super) fn uncork(&mut self) {
        self.corked = false;
    }

    pub(super) fn get_ref(&self) -> &S {
        &self.io
    }

    pub(super) fn into_inner(self) -> S {
        self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cork<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.corked {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.pause {
            this.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let want = if this.have < 5 {
            5 - this.have
        } else {
            this.body_left
        };
        // Handshake records are small and few: a copy through the stack
        // keeps this free of uninitialized-buffer tricks.
        let mut tmp = [0u8; 4096];
        let n = want.min(buf.remaining()).min(tmp.len());
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut limited = ReadBuf::new(&mut tmp[..n]);
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
        let got = limited.filled();
        buf.put_slice(got);
        if this.have < 5 {
            this.header[this.have..this.have + got.len()].copy_from_slice(got);
            this.have += got.len();
            if this.have == 5 {
                this.body_left = usize::from(u16::from_be_bytes([this.header[3], this.header[4]]));
            }
        } else {
            this.body_left -= got.len();
        }
        if this.have == 5 && this.body_left == 0 {
            this.have = 0;
            this.pause = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cork<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A TCP socket whose TLS records the kernel opens: reads return
/// application data; the peer's close_notify ends the stream; any other
/// alert or a post-handshake message (KeyUpdate) is an error, which closes
/// the connection with its reason.
pub(super) struct KernelTlsStream {
    tcp: TcpStream,
    /// Decrypted bytes that did not fit a small read buffer.
    pending: Vec<u8>,
    pending_at: usize,
    eof: bool,
}

/// Reads smaller than this go through a scratch buffer, so a control
/// record's first bytes (an alert's two) are always seen whole.
const SMALL_READ: usize = 256;

impl KernelTlsStream {
    pub(super) fn new(tcp: TcpStream) -> KernelTlsStream {
        KernelTlsStream {
            tcp,
            pending: Vec::new(),
            pending_at: 0,
            eof: false,
        }
    }

    /// The socket replies are written to (the kernel encrypts them).
    pub(super) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for KernelTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_at < this.pending.len() {
            let n = (this.pending.len() - this.pending_at).min(buf.remaining());
            buf.put_slice(&this.pending[this.pending_at..this.pending_at + n]);
            this.pending_at += n;
            return Poll::Ready(Ok(()));
        }
        if this.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let small = buf.remaining() < SMALL_READ;
            let mut scratch = [0u8; SMALL_READ];
            let mut head = [0u8; 2];
            let received = {
                let target: &mut [u8] = if small {
                    &mut scratch
                } else {
                    buf.initialize_unfilled()
                };
                let received = this
                    .tcp
                    .try_io(Interest::READABLE, || ktls::recv(this.tcp.as_fd(), target));
                if let Ok(Received::Control { len, .. }) = received {
                    let n = len.min(2);
                    head[..n].copy_from_slice(&target[..n]);
                }
                received
            };
            match received {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A record that does not open (EBADMSG) is the peer's fault.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BADMSG.raw_os_error()) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Received::Eof) => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Received::Data(n)) if small => {
                    let fits = n.min(buf.remaining());
                    buf.put_slice(&scratch[..fits]);
                    this.pending.clear();
                    this.pending.extend_from_slice(&scratch[fits..n]);
                    this.pending_at = 0;
                    return Poll::Ready(Ok(()));
                }
                Ok(Received::Data(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Received::Control { record_type, len }) => {
                    let head = &head[..len.min(2)];
                    return match ktls::control_record_error(record_type, head) {
                        None => {
                            this.eof = true;
                            Poll::Ready(Ok(()))
                        }
                        Some(why) => {
                            Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                        }
                    };
                }
            }
        }
    }
}

/// The kernel's name for a session's version and AEAD, if it has one.
pub(super) fn kernel_suite(
    version: Option<ProtocolVersion>,
    suite: Option<SupportedCipherSuite>,
) -> Option<(Version, Cipher)> {
    use rustls::CipherSuite as S;
    let version = match version? {
        ProtocolVersion::TLSv1_2 => Version::Tls12,
        ProtocolVersion::TLSv1_3 => Version::Tls13,
        _ => return None,
    };
    let cipher = match suite?.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Cipher::Aes128Gcm,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Cipher::Aes256Gcm,
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Cipher::Chacha20Poly1305,
        _ => return None,
    };
    Some((version, cipher))
}

/// One direction's secrets as the kernel takes them.
pub(super) fn crypto_info(
    version: Version,
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
) -> Result<CryptoInfo, String> {
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Cipher::Chacha20Poly1305, key, iv)
        }
        _ => return Err("a cipher the kernel does not take".to_string()),
    };
    CryptoInfo::new(version, cipher, key.as_ref(), iv.as_ref(), seq)
}

/// How many records may be sent under one key before it wears out
/// (rustls' confidentiality limit: 2^24 for AES-GCM; ChaCha20 has none).
/// rustls would update the key there; the kernel cannot, so the connection
/// closes before it and the client reconnects.
fn record_limit(suite: Option<SupportedCipherSuite>) -> u64 {
    match suite {
        Some(SupportedCipherSuite::Tls13(s)) => s.common.confidentiality_limit,
        Some(SupportedCipherSuite::Tls12(s)) => s.common.confidentiality_limit,
        None => 0,
    }
}

/// Where a TLS connection goes after its handshake.
pub(super) enum Offloaded {
    Kernel {
        stream: KernelTlsStream,
        /// Records the kernel may still send under this key.
        records_left: u64,
    },
    /// Still rustls, uncorked; why the kernel did not take it.
    UserSpace { stream: Box<TlsConn>, why: String },
}

/// Hands a finished handshake's keys to the kernel, or says why not and
/// keeps the rustls session. `TCP_ULP` is attached first, while the
/// session is still whole: where the kernel lacks it (ENOENT) nothing has
/// changed and user space carries on. Past that point the rustls session
/// is taken apart, so a refusal of the keys (`Err`) closes the connection.
pub(super) fn offload(mut stream: Box<TlsConn>) -> Result<Offloaded, String> {
    let keep = |mut stream: Box<TlsConn>, why: String| {
        stream.get_mut().0.uncork();
        Ok(Offloaded::UserSpace { stream, why })
    };
    let (cork, conn) = stream.get_ref();
    let suite = conn.negotiated_cipher_suite();
    let Some((version, _)) = kernel_suite(conn.protocol_version(), suite) else {
        let why = format!("the kernel does not take {:?}", suite.map(|s| s.suite()));
        return keep(stream, why);
    };
    if conn.is_handshaking() || !cork.at_record_boundary() {
        return keep(
            stream,
            "the handshake did not end on a record boundary".into(),
        );
    }
    match stream.get_mut().1.process_new_packets() {
        Ok(state)
            if state.plaintext_bytes_to_read() == 0
                && state.tls_bytes_to_write() == 0
                && !state.peer_has_closed() => {}
        Ok(_) => return keep(stream, "rustls holds bytes from after the handshake".into()),
        // The user-space stream reports it on the next read.
        Err(e) => return keep(stream, format!("rustls: {e}")),
    }
    if let Err(e) = ktls::set_ulp(stream.get_ref().0.get_ref().as_fd()) {
        return keep(stream, format!("setsockopt(TCP_ULP, \"tls\"): {e}"));
    }
    let records_left = record_limit(suite);
    let (cork, conn) = (*stream).into_inner();
    let tcp = cork.into_inner();
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| format!("extracting the session's keys: {e}"))?;
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    let tx = crypto_info(version, tx, *tx_seq)?;
    let rx = crypto_info(version, rx, *rx_seq)?;
    ktls::set_crypto(tcp.as_fd(), Direction::Tx, &tx)
        .map_err(|e| format!("setsockopt(SOL_TLS, TLS_TX): {e}"))?;
    ktls::set_crypto(tcp.as_fd(), Direction::Rx, &rx)
        .map_err(|e| format!("setsockopt(SOL_TLS, TLS_RX): {e}"))?;
    Ok(Offloaded::Kernel {
        stream: KernelTlsStream::new(tcp),
        records_left,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::{CipherSuite, ClientConfig, RootCertStore, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::config::{ClientAuth, TlsFiles};
    use crate::net::tls::Tls;

    /// A self-signed P-256 certificate for 127.0.0.1, made with openssl.
    struct Cert {
        dir: tempfile::TempDir,
    }

    impl Cert {
        fn new() -> Cert {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "cert.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=sluice-ktls-test",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-addext",
                    "basicConstraints=critical,CA:FALSE",
                ])
                .current_dir(dir.path())
                .output()
                .expect("openssl is not installed: run scripts/test.sh, which installs it");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Cert { dir }
        }

        fn server(&self) -> Tls {
            let files = TlsFiles {
                cert: self.dir.path().join("cert.pem"),
                key: self.dir.path().join("key.pem"),
                client_ca: None,
                client_auth: ClientAuth::None,
            };
            Tls::load(&files, true).unwrap()
        }

        fn client(
            &self,
            version: &'static SupportedProtocolVersion,
            suite: CipherSuite,
        ) -> TlsConnector {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.retain(|s| s.suite() == suite);
            assert_eq!(provider.cipher_suites.len(), 1, "{suite:?}");
            let mut roots = RootCertStore::empty();
            let cert = CertificateDer::from_pem_file(self.dir.path().join("cert.pem")).unwrap();
            roots.add(cert).unwrap();
            let config = ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        }
    }

    const SESSIONS: [(&SupportedProtocolVersion, CipherSuite, Version, Cipher); 6] = [
        (
            &rustls::version::TLS13,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            Version::Tls13,
            Cipher::Aes128Gcm,
        ),
        (
            &rustls::version::TLS13,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            Version::Tls13,
            Cipher::Aes256Gcm,
        ),
        (
            &rustls::version::TLS13,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            Version::Tls13,
            Cipher::Chacha20Poly1305,
        ),
        (
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Version::Tls12,
            Cipher::Aes128Gcm,
        ),
        (
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            Version::Tls12,
            Cipher::Aes256Gcm,
        ),
        (
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            Version::Tls12,
            Cipher::Chacha20Poly1305,
        ),
    ];

    async fn within<T>(
        read: impl std::future::Future<Output = io::Result<T>>,
        suite: CipherSuite,
    ) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("{suite:?}: nothing more arrived in the socket"))
            .unwrap()
    }

    /// Bytes that are not a repeat of anything, several records long.
    fn payload(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ salt)
            .collect()
    }

    /// A handshake through a corked server whose client sends `request`
    /// as soon as its own handshake is done, as a Kafka client does.
    async fn handshake(
        cert: &Cert,
        version: &'static SupportedProtocolVersion,
        suite: CipherSuite,
        request: Vec<u8>,
    ) -> (
        Box<TlsConn>,
        tokio::task::JoinHandle<tokio_rustls::client::TlsStream<TcpStream>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = cert.client(version, suite);
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(&request).await.unwrap();
            tls.flush().await.unwrap();
            tls
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = cert.server().acceptor();
        let server = acceptor.accept(Cork::new(tcp, true)).await.unwrap();
        (Box::new(server), client)
    }

    #[tokio::test]
    async fn the_cork_leaves_the_pipelined_request_in_the_socket() {
        let cert = Cert::new();
        for (version, suite, want_version, want_cipher) in SESSIONS {
            let (server, client) = handshake(&cert, version, suite, payload(3000, 1)).await;
            let (cork, conn) = server.get_ref();
            assert!(!conn.is_handshaking());
            assert!(cork.at_record_boundary(), "{suite:?}");
            assert_eq!(
                kernel_suite(conn.protocol_version(), conn.negotiated_cipher_suite()),
                Some((want_version, want_cipher))
            );
            // The request's record waits in the kernel, not in rustls.
            let mut peek = [0u8; 5];
            let n = within(cork.get_ref().peek(&mut peek), suite).await;
            assert!(n > 0, "{suite:?}");
            assert_eq!(peek[0], 23, "{suite:?}: an application-data record is next");
            let mut server = server;
            let state = server.get_mut().1.process_new_packets().unwrap();
            assert_eq!(state.plaintext_bytes_to_read(), 0, "{suite:?}");
            drop(client.await.unwrap());
        }
    }

    /// On a kernel without the ULP (this one) the attempt leaves the rustls
    /// session whole: the pipelined request and the reply cross byte for
    /// byte in user space. Where the kernel has it, the same exchange runs
    /// through kTLS instead.
    #[tokio::test]
    async fn an_offload_attempt_loses_no_byte_either_way() {
        let cert = Cert::new();
        let kernel = sluice_io::ktls::kernel_tls_available();
        for (version, suite, ..) in SESSIONS {
            let request = payload(100_000, 2);
            let reply = payload(300_000, 3);
            let (server, client) = handshake(&cert, version, suite, request.clone()).await;
            let mut got = vec![0u8; request.len()];
            match offload(server).unwrap() {
                Offloaded::UserSpace { mut stream, why } => {
                    assert!(!kernel, "{suite:?}: the kernel has kTLS but: {why}");
                    assert!(why.contains("TCP_ULP"), "{why}");
                    stream.read_exact(&mut got).await.unwrap();
                    stream.write_all(&reply).await.unwrap();
                    stream.flush().await.unwrap();
                }
                Offloaded::Kernel {
                    mut stream,
                    records_left,
                } => {
                    assert!(kernel, "{suite:?}: offloaded without kTLS?");
                    assert!(records_left > 1 << 20);
                    stream.read_exact(&mut got).await.unwrap();
                    let mut at = 0;
                    while at < reply.len() {
                        stream.tcp().writable().await.unwrap();
                        match stream.tcp().try_write(&reply[at..]) {
                            Ok(n) => at += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
            assert!(got == request, "{suite:?}: the request arrived changed");
            let mut tls = client.await.unwrap();
            let mut back = vec![0u8; reply.len()];
            tls.read_exact(&mut back).await.unwrap();
            assert!(back == reply, "{suite:?}: the reply arrived changed");
        }
    }

    /// What the kernel does with a `CryptoInfo`, in user space with ring:
    /// its bytes read back at the uapi offsets, records sealed and opened
    /// by the kernel's nonce rules (`tls_sw.c`: TLS 1.2 AES-GCM sends the
    /// `iv` field as the explicit nonce and increments it; TLS 1.3 and
    /// ChaCha20 XOR the sequence number into salt‖iv).
    struct KernelSide {
        version: Version,
        key: ring::aead::LessSafeKey,
        /// salt‖iv, 12 bytes.
        nonce_base: [u8; 12],
        seq: u64,
        gcm12: bool,
    }

    impl KernelSide {
        fn new(info: &CryptoInfo) -> KernelSide {
            let b = info.as_bytes();
            let version = match u16::from_ne_bytes([b[0], b[1]]) {
                0x0303 => Version::Tls12,
                0x0304 => Version::Tls13,
                v => panic!("version {v:#x}"),
            };
            let mut nonce_base = [0u8; 12];
            let (alg, key, seq) = match u16::from_ne_bytes([b[2], b[3]]) {
                51 => {
                    nonce_base[..4].copy_from_slice(&b[28..32]);
                    nonce_base[4..].copy_from_slice(&b[4..12]);
                    (&ring::aead::AES_128_GCM, &b[12..28], &b[32..40])
                }
                52 => {
                    nonce_base[..4].copy_from_slice(&b[44..48]);
                    nonce_base[4..].copy_from_slice(&b[4..12]);
                    (&ring::aead::AES_256_GCM, &b[12..44], &b[48..56])
                }
                54 => {
                    nonce_base.copy_from_slice(&b[4..16]);
                    (&ring::aead::CHACHA20_POLY1305, &b[16..48], &b[48..56])
                }
                c => panic!("cipher {c}"),
            };
            let key = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(alg, key).unwrap());
            KernelSide {
                version,
                gcm12: version == Version::Tls12 && alg != &ring::aead::CHACHA20_POLY1305,
                key,
                nonce_base,
                seq: u64::from_be_bytes(seq.try_into().unwrap()),
            }
        }

        fn xor_nonce(&self) -> ring::aead::Nonce {
            let mut n = self.nonce_base;
            for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                *b ^= s;
            }
            ring::aead::Nonce::assume_unique_for_key(n)
        }

        fn aad12(&self, len: usize) -> [u8; 13] {
            let mut aad = [0u8; 13];
            aad[..8].copy_from_slice(&self.seq.to_be_bytes());
            aad[8..].copy_from_slice(&[23, 3, 3, (len >> 8) as u8, len as u8]);
            aad
        }

        fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
            use ring::aead::Aad;
            let mut body = plaintext.to_vec();
            let record = if self.version == Version::Tls13 {
                body.push(23);
                let header = [
                    23,
                    3,
                    3,
                    ((body.len() + 16) >> 8) as u8,
                    (body.len() + 16) as u8,
                ];
                let nonce = self.xor_nonce();
                self.key
                    .seal_in_place_append_tag(nonce, Aad::from(header), &mut body)
                    .unwrap();
                [&header[..], &body].concat()
            } else if self.gcm12 {
                let explicit: [u8; 8] = self.nonce_base[4..].try_into().unwrap();
                let aad = self.aad12(plaintext.len());
                let nonce = ring::aead::Nonce::assume_unique_for_key(self.nonce_base);
                self.key
                    .seal_in_place_append_tag(nonce, Aad::from(aad), &mut body)
                    .unwrap();
                let len = 8 + body.len();
                let header = [23, 3, 3, (len >> 8) as u8, len as u8];
                // The kernel's tls_advance_record_sn: the explicit part counts up.
                let next = u64::from_be_bytes(explicit).wrapping_add(1);
                self.nonce_base[4..].copy_from_slice(&next.to_be_bytes());
                [&header[..], &explicit, &body].concat()
            } else {
                let aad = self.aad12(plaintext.len());
                let nonce = self.xor_nonce();
                self.key
                    .seal_in_place_append_tag(nonce, Aad::from(aad), &mut body)
                    .unwrap();
                let header = [23, 3, 3, (body.len() >> 8) as u8, body.len() as u8];
                [&header[..], &body].concat()
            };
            self.seq += 1;
            record
        }

        fn open(&mut self, header: [u8; 5], mut body: Vec<u8>) -> Vec<u8> {
            use ring::aead::Aad;
            assert_eq!(header[0], 23, "application data");
            let plain = if self.version == Version::Tls13 {
                let nonce = self.xor_nonce();
                let n = self
                    .key
                    .open_in_place(nonce, Aad::from(header), &mut body)
                    .unwrap()
                    .len();
                body.truncate(n);
                while body.last() == Some(&0) {
                    body.pop();
                }
                assert_eq!(body.pop(), Some(23), "inner content type");
                body
            } else if self.gcm12 {
                let mut nonce = self.nonce_base;
                nonce[4..].copy_from_slice(&body[..8]);
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let mut rest = body.split_off(8);
                let aad = self.aad12(rest.len() - 16);
                let n = self
                    .key
                    .open_in_place(nonce, Aad::from(aad), &mut rest)
                    .unwrap()
                    .len();
                rest.truncate(n);
                rest
            } else {
                let aad = self.aad12(body.len() - 16);
                let nonce = self.xor_nonce();
                let n = self
                    .key
                    .open_in_place(nonce, Aad::from(aad), &mut body)
                    .unwrap()
                    .len();
                body.truncate(n);
                body
            };
            self.seq += 1;
            plain
        }
    }

    /// The keys that would go to the kernel open what the client sent after
    /// the handshake and seal what it accepts, for every suite: the
    /// `CryptoInfo` mapping (keys, IVs, sequence numbers, the TLS 1.2 nonce
    /// counter) is checked against a real peer, not only against itself.
    #[tokio::test]
    async fn the_kernels_keys_open_the_clients_records_and_seal_ones_it_accepts() {
        let cert = Cert::new();
        for (version, suite, want_version, _) in SESSIONS {
            let request = payload(40_000, 4);
            let (server, client) = handshake(&cert, version, suite, request.clone()).await;
            let (cork, conn) = (*server).into_inner();
            let mut tcp = cork.into_inner();
            let secrets = conn.dangerous_extract_secrets().unwrap();
            let tx = crypto_info(want_version, &secrets.tx.1, secrets.tx.0).unwrap();
            let rx = crypto_info(want_version, &secrets.rx.1, secrets.rx.0).unwrap();
            if want_version == Version::Tls13 {
                // The server sent its tickets after the handshake.
                assert!(secrets.tx.0 > 0, "{suite:?}");
            }

            let mut opener = KernelSide::new(&rx);
            let mut got = Vec::new();
            while got.len() < request.len() {
                let mut header = [0u8; 5];
                // Records rustls had read would never come: fail, not hang.
                within(tcp.read_exact(&mut header), suite).await;
                let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
                within(tcp.read_exact(&mut body), suite).await;
                got.extend(opener.open(header, body));
            }
            assert!(got == request, "{suite:?}: request opened wrong");

            let mut sealer = KernelSide::new(&tx);
            let reply = payload(50_000, 5);
            for piece in reply.chunks(16 << 10) {
                tcp.write_all(&sealer.seal(piece)).await.unwrap();
            }
            let mut tls = client.await.unwrap();
            let mut back = vec![0u8; reply.len()];
            tls.read_exact(&mut back).await.unwrap();
            assert!(back == reply, "{suite:?}: reply read wrong");
        }
    }

    #[test]
    fn rustls_secrets_map_to_the_kernels_structs() {
        use rustls::crypto::cipher::{AeadKey, Iv};
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let iv: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from(key),
            iv: Iv::new(iv),
        };
        let info = crypto_info(Version::Tls13, &secrets, 9).unwrap();
        let b = info.as_bytes();
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 52);
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..44], &key);
        assert_eq!(&b[44..48], &iv[..4]);
        assert_eq!(&b[48..], &9u64.to_be_bytes());

        let secrets = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from(key),
            iv: Iv::new(iv),
        };
        let info = crypto_info(Version::Tls12, &secrets, 1).unwrap();
        let b = info.as_bytes();
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 0x0303);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 54);
        assert_eq!(&b[4..16], &iv);
        assert_eq!(&b[16..48], &key);
        assert_eq!(&b[48..], &1u64.to_be_bytes());

        // A 32-byte key where AES-128 takes 16 is refused, not cut.
        let secrets = ConnectionTrafficSecrets::Aes128Gcm {
            key: AeadKey::from(key),
            iv: Iv::new(iv),
        };
        assert!(crypto_info(Version::Tls13, &secrets, 0).is_err());
    }

    #[test]
    fn suites_the_kernel_lacks_stay_in_user_space() {
        assert_eq!(kernel_suite(Some(ProtocolVersion::TLSv1_1), None), None);
        assert_eq!(kernel_suite(Some(ProtocolVersion::TLSv1_3), None), None);
        assert_eq!(kernel_suite(None, None), None);
    }
}
