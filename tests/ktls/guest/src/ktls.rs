//! Kernel TLS from user space: attaching the `tls` upper-layer protocol,
//! handing a session's keys to the kernel (`TLS_TX` / `TLS_RX`), and — for
//! the fallback a TLS library takes when the kernel refuses — sealing and
//! opening TLS 1.3 records in user space with the same keys.
//!
//! Only TLS 1.3 with AES-128-GCM is handled: the handshake (`tls.rs`)
//! offers that one suite, so anything else is an error, not a silent
//! mismatch of key sizes.

use std::os::fd::{AsRawFd, BorrowedFd};

use l7c_runtime::Errno;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use rustls::ConnectionTrafficSecrets;

/// `SOL_TCP` option that attaches an upper-layer protocol (`"tls"`).
const TCP_ULP: libc::c_int = 31;
/// Socket level of the kTLS options.
const SOL_TLS: libc::c_int = 282;
/// `TLS_1_3_VERSION` in `struct tls_crypto_info`.
const TLS_1_3_VERSION: u16 = 0x0304;
/// `TLS_CIPHER_AES_GCM_128`.
const TLS_CIPHER_AES_GCM_128: u16 = 51;
/// Bytes of `struct tls12_crypto_info_aes_gcm_128`.
const CRYPTO_INFO_AES_GCM_128_SIZE: usize = 40;

/// Which direction of a socket the kernel takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `TLS_TX`: the kernel encrypts what the application sends.
    Transmit,
    /// `TLS_RX`: the kernel decrypts what arrives.
    Receive,
}

impl Direction {
    fn option(self) -> libc::c_int {
        match self {
            Direction::Transmit => 1,
            Direction::Receive => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Transmit => "TLS_TX",
            Direction::Receive => "TLS_RX",
        }
    }
}

/// One direction's keys as the kernel takes them:
/// `struct tls12_crypto_info_aes_gcm_128` (the layout serves TLS 1.3 too).
#[derive(Clone)]
pub struct CryptoInfo {
    key: [u8; 16],
    /// The 12-byte IV rustls reports: the kernel wants its first 4 bytes
    /// as `salt` and the other 8 as `iv`.
    iv: [u8; 12],
    /// The record sequence number of the next record.
    seq: u64,
}

impl CryptoInfo {
    /// From the keys rustls extracted for one direction.
    pub fn from_secrets(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<CryptoInfo, String> {
        let ConnectionTrafficSecrets::Aes128Gcm { key, iv } = secrets else {
            return Err("the session negotiated a suite other than TLS13_AES_128_GCM_SHA256".into());
        };
        let key: [u8; 16] =
            key.as_ref().try_into().map_err(|_| format!("an AES-128 key of {} bytes", key.as_ref().len()))?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| format!("a GCM IV of {} bytes", iv.as_ref().len()))?;
        Ok(CryptoInfo { key, iv, seq })
    }

    fn to_bytes(&self) -> [u8; CRYPTO_INFO_AES_GCM_128_SIZE] {
        let mut out = [0u8; CRYPTO_INFO_AES_GCM_128_SIZE];
        out[0..2].copy_from_slice(&TLS_1_3_VERSION.to_ne_bytes());
        out[2..4].copy_from_slice(&TLS_CIPHER_AES_GCM_128.to_ne_bytes());
        out[4..12].copy_from_slice(&self.iv[4..12]);
        out[12..28].copy_from_slice(&self.key);
        out[28..32].copy_from_slice(&self.iv[0..4]);
        out[32..40].copy_from_slice(&self.seq.to_be_bytes());
        out
    }
}

fn setsockopt(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `value` is valid for `value.len()` bytes for the duration of
    // the call; the kernel copies it.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `setsockopt(SOL_TCP, TCP_ULP, "tls")`.
pub fn attach_tls_ulp(socket: BorrowedFd<'_>) -> Result<(), Errno> {
    setsockopt(socket, libc::SOL_TCP, TCP_ULP, b"tls")
}

/// `setsockopt(SOL_TLS, TLS_TX or TLS_RX, crypto_info)`.
pub fn set_keys(socket: BorrowedFd<'_>, direction: Direction, info: &CryptoInfo) -> Result<(), Errno> {
    setsockopt(socket, SOL_TLS, direction.option(), &info.to_bytes())
}

/// One direction's key and record counter, for TLS 1.3 records handled
/// in user space.
struct RecordCipher {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl RecordCipher {
    fn new(info: &CryptoInfo) -> Result<RecordCipher, String> {
        let key = UnboundKey::new(&AES_128_GCM, &info.key).map_err(|_| "an unusable AES-128-GCM key".to_owned())?;
        Ok(RecordCipher { key: LessSafeKey::new(key), iv: info.iv, seq: info.seq })
    }

    /// The next record's nonce (RFC 8446 5.3: the IV xor the sequence
    /// number, left-padded to 12 bytes); counts the record.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// The user-space fallback: TLS 1.3 application-data records sealed with
/// the session's transmit keys, as a TLS library writes them when the
/// kernel refuses `TLS_TX`.
pub struct RecordSealer(RecordCipher);

impl RecordSealer {
    pub fn new(info: &CryptoInfo) -> Result<RecordSealer, String> {
        RecordCipher::new(info).map(RecordSealer)
    }

    /// One record carrying `plaintext` (at most 16 KiB).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        // The inner plaintext ends with its real content type.
        let mut body = plaintext.to_vec();
        body.push(CONTENT_APPLICATION_DATA);
        let length = u16::try_from(body.len() + AES_GCM_TAG).map_err(|_| "a record over 64 KiB".to_owned())?;
        let header = record_header(length);
        let nonce = self.0.next_nonce();
        self.0
            .key
            .seal_in_place_append_tag(nonce, Aad::from(header), &mut body)
            .map_err(|_| "sealing failed".to_owned())?;
        let mut record = header.to_vec();
        record.extend_from_slice(&body);
        Ok(record)
    }
}

/// The user-space receiver of a fallen-back session: opens the records a
/// [`RecordSealer`] wrote (without attaching the `tls` ULP to the server
/// socket, which would change how the kernel treats the client: see
/// docs/ktls.md, "The ULP hazard").
pub struct RecordOpener(RecordCipher);

impl RecordOpener {
    pub fn new(info: &CryptoInfo) -> Result<RecordOpener, String> {
        RecordCipher::new(info).map(RecordOpener)
    }

    /// Opens every complete record at the front of `wire`, appending their
    /// application data to `plaintext`; returns the bytes consumed.
    pub fn open(&mut self, wire: &[u8], plaintext: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        while let Some(header) = wire.get(at..at + RECORD_HEADER) {
            let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let Some(sealed) = wire.get(at + RECORD_HEADER..at + RECORD_HEADER + length) else { break };
            let record = self.0.seq;
            let nonce = self.0.next_nonce();
            let mut body = sealed.to_vec();
            let aad: [u8; RECORD_HEADER] = [header[0], header[1], header[2], header[3], header[4]];
            let inner = self
                .0
                .key
                .open_in_place(nonce, Aad::from(aad), &mut body)
                .map_err(|_| format!("record {record} does not decrypt"))?;
            // The inner plaintext: content, real content type, zero padding.
            let end = inner.iter().rposition(|&b| b != 0).ok_or("an empty inner plaintext")?;
            if inner[end] != CONTENT_APPLICATION_DATA {
                return Err(format!("record {record} carries content type {}", inner[end]));
            }
            plaintext.extend_from_slice(&inner[..end]);
            at += RECORD_HEADER + length;
        }
        Ok(at)
    }
}

const CONTENT_APPLICATION_DATA: u8 = 0x17;
const AES_GCM_TAG: usize = 16;
/// Bytes of a TLS record header: type, legacy version, length.
pub const RECORD_HEADER: usize = 5;

fn record_header(length: u16) -> [u8; RECORD_HEADER] {
    let [hi, lo] = length.to_be_bytes();
    [CONTENT_APPLICATION_DATA, 0x03, 0x03, hi, lo]
}

/// A TLS record as seen on the wire by a receiver without `TLS_RX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRecord {
    pub content_type: u8,
    pub version: [u8; 2],
    pub length: usize,
}

/// Splits raw bytes into TLS records; `Err` names the first byte that is
/// not a record boundary (plaintext on the wire, or a cut record).
pub fn parse_records(bytes: &[u8]) -> Result<Vec<WireRecord>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
            return Err(format!("{} stray bytes at offset {at}", bytes.len() - at));
        };
        let record = WireRecord {
            content_type: header[0],
            version: [header[1], header[2]],
            length: usize::from(u16::from_be_bytes([header[3], header[4]])),
        };
        if record.content_type != CONTENT_APPLICATION_DATA || record.version != [0x03, 0x03] {
            return Err(format!("offset {at} starts with {:02x?}, not a TLS 1.3 record header 17 03 03", &header[..3]));
        }
        at += RECORD_HEADER + record.length;
        if at > bytes.len() {
            return Err(format!("the last record is cut: {} bytes missing", at - bytes.len()));
        }
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_puts_the_salt_after_the_key() {
        let info = CryptoInfo { key: [7; 16], iv: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], seq: 258 };
        let bytes = info.to_bytes();
        assert_eq!(&bytes[0..4], &[0x04, 0x03, 51, 0]);
        assert_eq!(&bytes[4..12], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&bytes[12..28], &[7; 16]);
        assert_eq!(&bytes[28..32], &[1, 2, 3, 4]);
        assert_eq!(&bytes[32..40], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn sealed_records_parse_as_records() {
        let info = CryptoInfo { key: [9; 16], iv: [3; 12], seq: 0 };
        let mut sealer = RecordSealer::new(&info).unwrap();
        let mut wire = sealer.seal(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        wire.extend(sealer.seal(b"x").unwrap());
        let records = parse_records(&wire).unwrap();
        assert_eq!(records.iter().map(|r| r.length).collect::<Vec<_>>(), vec![18 + 1 + 16, 1 + 1 + 16]);
        let mut opener = RecordOpener::new(&info).unwrap();
        let mut plaintext = Vec::new();
        assert_eq!(opener.open(&wire[..wire.len() - 1], &mut plaintext).unwrap(), records[0].length + RECORD_HEADER);
        assert_eq!(plaintext, b"GET / HTTP/1.1\r\n\r\n");
        assert!(parse_records(b"GET / HTTP/1.1").is_err());
        assert!(parse_records(&wire[..wire.len() - 1]).is_err());
    }
}
