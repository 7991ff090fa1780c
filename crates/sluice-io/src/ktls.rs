//! Kernel TLS (`CONFIG_TLS`): whether this kernel can encrypt TLS records
//! itself, and the socket options that hand it a session's keys, so a TLS
//! socket can still take `sendfile`/`splice`.
//!
//! Layouts and numbers are the Linux uapi's (`include/uapi/linux/tls.h`,
//! `include/linux/socket.h`); the unit tests pin every size and offset.
//! This module knows nothing of any TLS library: the caller brings the
//! traffic key, the 12-byte IV the library derived and the next sequence
//! number, per direction.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SOL_TLS` (`include/linux/socket.h`).
pub const SOL_TLS: libc::c_int = 282;
/// `setsockopt(SOL_TLS, TLS_TX)`: the keys records are sent with.
pub const TLS_TX: libc::c_int = 1;
/// `setsockopt(SOL_TLS, TLS_RX)`: the keys received records are opened with.
pub const TLS_RX: libc::c_int = 2;
/// The control message `sendmsg` gives a non-data record's type in.
pub const TLS_SET_RECORD_TYPE: libc::c_int = 1;
/// The control message `recvmsg` carries a non-data record's type in.
pub const TLS_GET_RECORD_TYPE: libc::c_int = 2;

const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// TLS record content types (RFC 8446 §5.1).
pub const RECORD_ALERT: u8 = 21;
pub const RECORD_HANDSHAKE: u8 = 22;
pub const RECORD_APPLICATION_DATA: u8 = 23;

/// Whether the kernel has the `tls` upper-layer protocol. Setting it on an
/// unconnected TCP socket fails with ENOTCONN where the module exists (it
/// needs an established connection) and ENOENT where it does not.
pub fn kernel_tls_available() -> bool {
    let Ok(socket) = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    ) else {
        return false;
    };
    use std::os::fd::AsFd;
    match set_ulp(socket.as_fd()) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOTCONN),
    }
}

/// Attaches the `tls` upper-layer protocol to a connected TCP socket. Until
/// [`set_crypto`] installs keys the socket still carries plain bytes, so a
/// failure here (ENOENT: no `CONFIG_TLS`) leaves the connection usable as it
/// was.
pub fn set_ulp(fd: BorrowedFd<'_>) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: `fd` is a descriptor borrowed for the call's duration, and the
    // option value points at `name`, valid for its length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The protocol version a session negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// The AEADs the kernel implements for TLS that rustls offers too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        }
    }
}

/// `struct tls_crypto_info`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Header {
    version: u16,
    cipher_type: u16,
}

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
#[derive(Clone, Copy)]
struct AesGcm128 {
    info: Header,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_aes_gcm_256`.
#[repr(C)]
#[derive(Clone, Copy)]
struct AesGcm256 {
    info: Header,
    iv: [u8; 8],
    key: [u8; 32],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305` (its salt is empty).
#[repr(C)]
#[derive(Clone, Copy)]
struct Chacha20Poly1305 {
    info: Header,
    iv: [u8; 12],
    key: [u8; 32],
    rec_seq: [u8; 8],
}

// No padding anywhere: `as_bytes` exposes every byte to the kernel.
const _: () = assert!(size_of::<AesGcm128>() == 4 + 8 + 16 + 4 + 8);
const _: () = assert!(size_of::<AesGcm256>() == 4 + 8 + 32 + 4 + 8);
const _: () = assert!(size_of::<Chacha20Poly1305>() == 4 + 12 + 32 + 8);

#[derive(Clone, Copy)]
enum Info {
    AesGcm128(AesGcm128),
    AesGcm256(AesGcm256),
    Chacha20Poly1305(Chacha20Poly1305),
}

/// One direction's keys as `setsockopt(SOL_TLS, TLS_TX | TLS_RX)` takes
/// them. Zeroed when dropped.
pub struct CryptoInfo(Info);

impl CryptoInfo {
    /// From a session's traffic key, its 12-byte IV as TLS libraries derive
    /// it (RFC 8446 §5.3; for TLS 1.2 AES-GCM, the 4-byte implicit salt then
    /// 8 bytes from the key block, RFC 5288) and the next record's sequence
    /// number.
    ///
    /// TLS 1.3 and ChaCha20-Poly1305 form each nonce as IV XOR sequence, in
    /// the kernel as in rustls, so the IV goes over as it is. TLS 1.2
    /// AES-GCM sends an explicit 8-byte nonce per record, which rustls
    /// makes as `iv[4..] XOR seq` and the kernel as a counter it increments
    /// per record, starting from the `iv` field. Starting that counter at
    /// `iv[4..] + seq` keeps every nonce the kernel uses above the ones
    /// rustls used before it (`x ^ k <= x + k < x + seq` for `k < seq`),
    /// so no nonce repeats under the key. (The receiving side reads the
    /// explicit nonce from each record; its `iv` field is not used.)
    pub fn new(
        version: Version,
        cipher: Cipher,
        key: &[u8],
        iv: &[u8],
        seq: u64,
    ) -> Result<CryptoInfo, String> {
        if key.len() != cipher.key_len() {
            return Err(format!(
                "{cipher:?} takes a {}-byte key, not {}",
                cipher.key_len(),
                key.len()
            ));
        }
        let iv: [u8; 12] = iv
            .try_into()
            .map_err(|_| format!("a {}-byte IV where 12 were expected", iv.len()))?;
        let header = |cipher_type| Header {
            version: match version {
                Version::Tls12 => TLS_1_2_VERSION,
                Version::Tls13 => TLS_1_3_VERSION,
            },
            cipher_type,
        };
        let rec_seq = seq.to_be_bytes();
        let mut salt = [0u8; 4];
        salt.copy_from_slice(&iv[..4]);
        let mut explicit = [0u8; 8];
        explicit.copy_from_slice(&iv[4..]);
        if version == Version::Tls12 {
            explicit = u64::from_be_bytes(explicit).wrapping_add(seq).to_be_bytes();
        }
        Ok(CryptoInfo(match cipher {
            Cipher::Aes128Gcm => {
                let mut k = [0u8; 16];
                k.copy_from_slice(key);
                Info::AesGcm128(AesGcm128 {
                    info: header(TLS_CIPHER_AES_GCM_128),
                    iv: explicit,
                    key: k,
                    salt,
                    rec_seq,
                })
            }
            Cipher::Aes256Gcm => {
                let mut k = [0u8; 32];
                k.copy_from_slice(key);
                Info::AesGcm256(AesGcm256 {
                    info: header(TLS_CIPHER_AES_GCM_256),
                    iv: explicit,
                    key: k,
                    salt,
                    rec_seq,
                })
            }
            Cipher::Chacha20Poly1305 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(key);
                Info::Chacha20Poly1305(Chacha20Poly1305 {
                    info: header(TLS_CIPHER_CHACHA20_POLY1305),
                    iv,
                    key: k,
                    rec_seq,
                })
            }
        }))
    }

    /// The bytes `setsockopt` passes to the kernel.
    pub fn as_bytes(&self) -> &[u8] {
        let (ptr, len): (*const u8, usize) = match &self.0 {
            Info::AesGcm128(s) => ((s as *const AesGcm128).cast(), size_of::<AesGcm128>()),
            Info::AesGcm256(s) => ((s as *const AesGcm256).cast(), size_of::<AesGcm256>()),
            Info::Chacha20Poly1305(s) => (
                (s as *const Chacha20Poly1305).cast(),
                size_of::<Chacha20Poly1305>(),
            ),
        };
        // SAFETY: `ptr` points at a repr(C) struct of `len` bytes borrowed
        // from `self`; every field is a byte array or a u16 and the const
        // asserts above show there is no padding, so all `len` bytes are
        // initialized.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        // Volatile, so the keys do not outlive the struct in memory.
        fn wipe<T>(s: &mut T, zero: T) {
            // SAFETY: `s` is a valid, exclusively borrowed `T`; the structs
            // wiped are plain bytes with no drop glue.
            unsafe { std::ptr::write_volatile(s, zero) };
        }
        let header = Header {
            version: 0,
            cipher_type: 0,
        };
        match &mut self.0 {
            Info::AesGcm128(s) => wipe(
                s,
                AesGcm128 {
                    info: header,
                    iv: [0; 8],
                    key: [0; 16],
                    salt: [0; 4],
                    rec_seq: [0; 8],
                },
            ),
            Info::AesGcm256(s) => wipe(
                s,
                AesGcm256 {
                    info: header,
                    iv: [0; 8],
                    key: [0; 32],
                    salt: [0; 4],
                    rec_seq: [0; 8],
                },
            ),
            Info::Chacha20Poly1305(s) => wipe(
                s,
                Chacha20Poly1305 {
                    info: header,
                    iv: [0; 12],
                    key: [0; 32],
                    rec_seq: [0; 8],
                },
            ),
        }
    }
}

/// Which way a [`CryptoInfo`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Tx,
    Rx,
}

/// Installs one direction's keys on a socket that has the `tls` ULP
/// ([`set_ulp`]). From `Tx` on, bytes written are sent as application-data
/// records; from `Rx` on, records already queued are decrypted too.
pub fn set_crypto(fd: BorrowedFd<'_>, direction: Direction, info: &CryptoInfo) -> io::Result<()> {
    let bytes = info.as_bytes();
    let name = match direction {
        Direction::Tx => TLS_TX,
        Direction::Rx => TLS_RX,
    };
    // SAFETY: `fd` is borrowed for the call; the value points at `bytes`,
    // valid for its length, which is the uapi struct the option expects.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_TLS,
            name,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one `recvmsg` on a kTLS socket returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Decrypted application data, this many bytes at the buffer's start.
    Data(usize),
    /// The peer closed the TCP stream.
    Eof,
    /// A record of another type (alert, handshake): its decrypted payload,
    /// this many bytes at the buffer's start (possibly cut short).
    Control { record_type: u8, len: usize },
}

/// Reads decrypted bytes without blocking (`MSG_DONTWAIT`). A plain `read`
/// fails with EIO when the next record is not application data; `recvmsg`
/// with room for a control message returns it with its type instead
/// (`TLS_GET_RECORD_TYPE`). One call never mixes record types.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // Room for one cmsghdr carrying one byte, aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: `msg` points at `iov` (which covers `buf`, exclusively
    // borrowed) and at `control`, both alive for the call; the kernel
    // writes at most their lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut record_type = None;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within `msg_control..msg_controllen` and return null past its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR point at
        // a complete header inside `control`; the data byte is read only
        // when the header says it carries at least one.
        unsafe {
            let header = &*cmsg;
            if header.cmsg_level == SOL_TLS
                && header.cmsg_type == TLS_GET_RECORD_TYPE
                && header.cmsg_len as usize >= libc::CMSG_LEN(1) as usize
            {
                record_type = Some(*libc::CMSG_DATA(cmsg));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(match record_type {
        // Kernels since 5.x only attach the type to non-data records.
        None | Some(RECORD_APPLICATION_DATA) if n == 0 => Received::Eof,
        None | Some(RECORD_APPLICATION_DATA) => Received::Data(n),
        Some(record_type) => Received::Control {
            record_type,
            len: n,
        },
    })
}

/// Sends a `close_notify` alert (RFC 8446 §6.1) on a kernel TLS socket:
/// the two-byte alert payload as one record of type alert
/// (`TLS_SET_RECORD_TYPE`), without blocking (`MSG_DONTWAIT`). The kernel
/// seals it under the session's keys like any record. Returns the bytes
/// of payload taken (2, or an error such as WouldBlock).
pub fn send_close_notify(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // Level warning (1), description close_notify (0).
    let payload = [1u8, 0u8];
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
    // SAFETY: `control` is 32 bytes, room for one cmsghdr with one data
    // byte (CMSG_SPACE(1) is 24 on 64-bit Linux), aligned for cmsghdr as
    // u64s are; CMSG_FIRSTHDR points at its start.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = RECORD_ALERT;
    }
    // SAFETY: `msg` points at `iov` (over `payload`, only read) and at
    // `control`, both alive for the call.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// What a connection does with a control record it read under kTLS: the
/// peer's `close_notify` ends the stream cleanly (`None`); anything else —
/// other alerts, and handshake messages (a TLS 1.3 KeyUpdate, which would
/// need new keys handed to the kernel; a renegotiation) — ends it with the
/// reason returned.
pub fn control_record_error(record_type: u8, payload: &[u8]) -> Option<String> {
    match (record_type, payload) {
        (RECORD_ALERT, [_, 0, ..]) => None,
        (RECORD_ALERT, [level, description, ..]) => Some(format!(
            "the peer sent TLS alert {description} (level {level})"
        )),
        (RECORD_HANDSHAKE, [24, ..]) => Some(
            "the peer sent a TLS 1.3 KeyUpdate, which this kernel TLS session does not take"
                .to_string(),
        ),
        (RECORD_HANDSHAKE, [kind, ..]) => Some(format!(
            "the peer sent TLS handshake message {kind} after the handshake"
        )),
        (other, _) => Some(format!(
            "the peer sent an unexpected TLS record (type {other})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    fn listed() -> Option<bool> {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .ok()
            .map(|s| s.split_whitespace().any(|u| u == "tls"))
    }

    #[test]
    fn the_probe_agrees_with_the_kernels_list_of_upper_layer_protocols() {
        let before = listed();
        let probed = super::kernel_tls_available();
        // Asking for the ULP loads its module where one exists, so after the
        // probe the kernel's list and the probe must agree.
        let after = listed();
        if before == Some(true) {
            assert!(probed, "the kernel lists tls but the probe says no");
        }
        if let Some(after) = after {
            assert_eq!(probed, after, "probe {probed}, kernel lists tls: {after}");
        }
    }

    /// Sizes and offsets from include/uapi/linux/tls.h: the header is two
    /// __u16s, then iv, key, salt and rec_seq as unsigned char arrays of
    /// TLS_CIPHER_*_{IV,KEY,SALT,REC_SEQ}_SIZE.
    #[test]
    fn the_structs_match_the_uapi_layouts() {
        assert_eq!(size_of::<Header>(), 4);
        assert_eq!(offset_of!(Header, cipher_type), 2);

        assert_eq!(size_of::<AesGcm128>(), 40);
        assert_eq!(offset_of!(AesGcm128, iv), 4);
        assert_eq!(offset_of!(AesGcm128, key), 12);
        assert_eq!(offset_of!(AesGcm128, salt), 28);
        assert_eq!(offset_of!(AesGcm128, rec_seq), 32);

        assert_eq!(size_of::<AesGcm256>(), 56);
        assert_eq!(offset_of!(AesGcm256, iv), 4);
        assert_eq!(offset_of!(AesGcm256, key), 12);
        assert_eq!(offset_of!(AesGcm256, salt), 44);
        assert_eq!(offset_of!(AesGcm256, rec_seq), 48);

        assert_eq!(size_of::<Chacha20Poly1305>(), 56);
        assert_eq!(offset_of!(Chacha20Poly1305, iv), 4);
        assert_eq!(offset_of!(Chacha20Poly1305, key), 16);
        assert_eq!(offset_of!(Chacha20Poly1305, rec_seq), 48);
    }

    fn seq_bytes(n: u8) -> Vec<u8> {
        (0..n).map(|i| i + 0x10).collect()
    }

    #[test]
    fn tls13_aes_128_gcm_goes_over_byte_for_byte() {
        let key = seq_bytes(16);
        let iv: Vec<u8> = (0xa0..0xac).collect();
        let info = CryptoInfo::new(Version::Tls13, Cipher::Aes128Gcm, &key, &iv, 0x0102).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&0x0304u16.to_ne_bytes());
        want.extend_from_slice(&51u16.to_ne_bytes());
        want.extend_from_slice(&iv[4..]); // iv
        want.extend_from_slice(&key); // key
        want.extend_from_slice(&iv[..4]); // salt
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]); // rec_seq, big-endian
        assert_eq!(info.as_bytes(), &want[..]);
    }

    #[test]
    fn tls13_aes_256_gcm_goes_over_byte_for_byte() {
        let key = seq_bytes(32);
        let iv: Vec<u8> = (0xa0..0xac).collect();
        let info = CryptoInfo::new(Version::Tls13, Cipher::Aes256Gcm, &key, &iv, 7).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), 56);
        assert_eq!(
            &b[..4],
            [0x0304u16.to_ne_bytes(), 52u16.to_ne_bytes()].concat()
        );
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..44], &key[..]);
        assert_eq!(&b[44..48], &iv[..4]);
        assert_eq!(&b[48..56], &7u64.to_be_bytes());
    }

    #[test]
    fn chacha20_poly1305_takes_the_whole_iv_in_both_versions() {
        let key = seq_bytes(32);
        let iv: Vec<u8> = (0xa0..0xac).collect();
        for (version, code) in [(Version::Tls12, 0x0303u16), (Version::Tls13, 0x0304)] {
            let info =
                CryptoInfo::new(version, Cipher::Chacha20Poly1305, &key, &iv, 1 << 40).unwrap();
            let b = info.as_bytes();
            assert_eq!(b.len(), 56);
            assert_eq!(&b[..4], [code.to_ne_bytes(), 54u16.to_ne_bytes()].concat());
            assert_eq!(
                &b[4..16],
                &iv[..],
                "{version:?}: nonce = iv ^ seq, no offset"
            );
            assert_eq!(&b[16..48], &key[..]);
            assert_eq!(&b[48..56], &(1u64 << 40).to_be_bytes());
        }
    }

    #[test]
    fn tls12_aes_gcm_starts_the_kernels_nonce_counter_past_rustls_nonces() {
        let key = seq_bytes(16);
        // Explicit part 0x...ff: the counter start must carry across bytes.
        let iv = [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0xff];
        let info = CryptoInfo::new(Version::Tls12, Cipher::Aes128Gcm, &key, &iv, 3).unwrap();
        let b = info.as_bytes();
        assert_eq!(
            &b[..4],
            [0x0303u16.to_ne_bytes(), 51u16.to_ne_bytes()].concat()
        );
        assert_eq!(&b[4..12], &[0, 0, 0, 0, 0, 0, 1, 0x02], "0xff + 3");
        assert_eq!(&b[12..28], &key[..]);
        assert_eq!(&b[28..32], &[1, 2, 3, 4]);
        assert_eq!(&b[32..40], &3u64.to_be_bytes());

        // No explicit nonce rustls used (x ^ k, k < seq) is one the kernel
        // will use (x + seq + j), whatever x is.
        for x in [0u64, 0xff, 0x1234_5678, u64::MAX - 2, u64::MAX] {
            let seq = 5u64;
            let used: Vec<u64> = (0..seq).map(|k| x ^ k).collect();
            for j in 0..1000u64 {
                assert!(
                    !used.contains(&x.wrapping_add(seq).wrapping_add(j)),
                    "x {x:#x} j {j}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_or_iv_lengths_are_refused() {
        let iv = [0u8; 12];
        assert!(CryptoInfo::new(Version::Tls13, Cipher::Aes128Gcm, &[0; 32], &iv, 0).is_err());
        assert!(CryptoInfo::new(Version::Tls13, Cipher::Aes256Gcm, &[0; 16], &iv, 0).is_err());
        assert!(CryptoInfo::new(Version::Tls13, Cipher::Aes256Gcm, &[0; 32], &iv[..8], 0).is_err());
    }

    #[test]
    fn only_close_notify_ends_a_stream_cleanly() {
        assert_eq!(control_record_error(RECORD_ALERT, &[1, 0]), None);
        assert_eq!(control_record_error(RECORD_ALERT, &[2, 0]), None);
        assert!(control_record_error(RECORD_ALERT, &[2, 40]).is_some());
        assert!(control_record_error(RECORD_ALERT, &[]).is_some());
        assert!(control_record_error(RECORD_ALERT, &[1]).is_some());
        let key_update = control_record_error(RECORD_HANDSHAKE, &[24, 0, 0, 1, 0]).unwrap();
        assert!(key_update.contains("KeyUpdate"), "{key_update}");
        assert!(control_record_error(RECORD_HANDSHAKE, &[4, 0, 0, 0]).is_some());
        assert!(control_record_error(RECORD_HANDSHAKE, &[]).is_some());
        assert!(control_record_error(20, &[1]).is_some());
    }

    #[test]
    fn setting_keys_on_a_socket_without_the_ulp_fails_and_leaves_it_usable() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let info =
            CryptoInfo::new(Version::Tls13, Cipher::Aes128Gcm, &[7; 16], &[9; 12], 0).unwrap();
        // Without the ULP attached, SOL_TLS is not a level TCP knows.
        assert!(set_crypto(server.as_fd(), Direction::Tx, &info).is_err());
        if !kernel_tls_available() {
            let e = set_ulp(server.as_fd()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        }
        server.write_all(b"still plain").unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still plain");
    }

    /// Only the message's shape can be checked without `CONFIG_TLS`: a
    /// plain TCP socket ignores the SOL_TLS control message and sends the
    /// payload as it is, so the peer sees exactly the alert's two bytes.
    #[test]
    fn close_notify_is_the_two_byte_alert_in_one_message() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(send_close_notify(server.as_fd()).unwrap(), 2);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, [1, 0], "warning, close_notify");
        assert_eq!(control_record_error(RECORD_ALERT, &got), None);
    }

    #[test]
    fn recv_reads_data_would_block_and_eof_on_a_plain_socket() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let e = recv(server.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello").unwrap();
        let got = loop {
            match recv(server.as_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(got, Received::Data(5));
        assert_eq!(&buf[..5], b"hello");
        drop(client);
        let got = loop {
            match recv(server.as_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(got, Received::Eof);
    }
}
