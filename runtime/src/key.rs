//! The key of the enrollment socket hash: a connection's 4-tuple, laid out
//! so that a `sock_ops` program builds it from `struct bpf_sock_ops` with
//! plain 4-byte copies and an `sk_msg` program from `struct sk_msg_md`
//! the same way, and user space from the socket's addresses.
//!
//! ```text
//! struct l7_sock_key {          // 44 bytes, no padding
//!     __u32 family;             //  0  AF_INET (2) or AF_INET6 (10)
//!     __u32 remote_ip[4];       //  4  network order; IPv4: [remote_ip4, 0, 0, 0]
//!     __u32 local_ip[4];        // 20  network order; IPv4: [local_ip4, 0, 0, 0]
//!     __u32 remote_port;        // 36  as the context reads it: bytes [0, 0, hi, lo]
//!     __u32 local_port;         // 40  host order, as the context reads it
//! };
//! ```
//!
//! `remote_port` is copied verbatim from `bpf_sock_ops.remote_port` /
//! `sk_msg_md.remote_port`: the kernel loads the 16-bit network-order
//! port and, on little-endian machines, shifts it into the upper half of
//! the u32, so its memory bytes are `[0, 0, hi, lo]` (measured in
//! `tests/mechanics.rs`, `context_fields_and_key_layout`). `local_port` is
//! a host-order u32. Nothing is converted on either side, so a program
//! never spends instructions on byte order to build or match a key.
//!
//! The socket enrolled is the one that sends the requests: for `l7c run`,
//! the connection's local end as the `sock_ops` program sees it on
//! `ACTIVE_ESTABLISHED_CB`; in the harness, the client socket.

use std::net::{IpAddr, SocketAddr};

/// Size of [`SockKey`] in bytes: the `key_size` of the enrollment map.
pub const SOCK_KEY_SIZE: usize = 44;

/// `AF_INET` as the context's `family` field holds it.
pub const AF_INET: u32 = 2;
/// `AF_INET6`.
pub const AF_INET6: u32 = 10;

/// Byte offsets of the fields in [`SockKey::to_bytes`].
pub mod offset {
    pub const FAMILY: usize = 0;
    pub const REMOTE_IP: usize = 4;
    pub const LOCAL_IP: usize = 20;
    pub const REMOTE_PORT: usize = 36;
    pub const LOCAL_PORT: usize = 40;
}

/// One connection's key in the enrollment map (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// The enrolled socket's own address.
    pub local: SocketAddr,
    /// The address it is connected to.
    pub remote: SocketAddr,
}

impl SockKey {
    pub fn new(local: SocketAddr, remote: SocketAddr) -> SockKey {
        SockKey { local, remote }
    }

    /// The key's bytes, as the kernel hashes them.
    pub fn to_bytes(&self) -> [u8; SOCK_KEY_SIZE] {
        let mut key = [0u8; SOCK_KEY_SIZE];
        let family = match self.local.ip() {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        put(&mut key, offset::FAMILY, &family.to_ne_bytes());
        put(&mut key, offset::REMOTE_IP, &ip_bytes(self.remote.ip()));
        put(&mut key, offset::LOCAL_IP, &ip_bytes(self.local.ip()));
        let [hi, lo] = self.remote.port().to_be_bytes();
        put(&mut key, offset::REMOTE_PORT, &[0, 0, hi, lo]);
        put(
            &mut key,
            offset::LOCAL_PORT,
            &u32::from(self.local.port()).to_ne_bytes(),
        );
        key
    }
}

/// The 16 address bytes: IPv4 in the first word, network order.
fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => put(&mut bytes, 0, &v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

/// Copies `src` into `dst` at `at`; the callers' offsets are constants
/// that fit (checked by the unit test), and an out-of-range copy would be
/// skipped rather than panic.
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(slot) = dst.get_mut(at..at + src.len()) {
        slot.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_layout() {
        let key = SockKey::new(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap(),
        )
        .to_bytes();
        assert_eq!(&key[0..4], &AF_INET.to_ne_bytes());
        assert_eq!(&key[4..8], &[127, 0, 0, 2]);
        assert_eq!(&key[8..20], &[0; 12]);
        assert_eq!(&key[20..24], &[127, 0, 0, 1]);
        assert_eq!(&key[36..40], &[0, 0, 0, 80]);
        assert_eq!(&key[40..44], &40000u32.to_ne_bytes());
    }

    #[test]
    fn ipv6_layout() {
        let key =
            SockKey::new("[::1]:5".parse().unwrap(), "[fe80::2]:443".parse().unwrap()).to_bytes();
        assert_eq!(&key[0..4], &AF_INET6.to_ne_bytes());
        assert_eq!(key[4], 0xfe);
        assert_eq!(key[35], 1);
        assert_eq!(&key[36..40], &[0, 0, 1, 187]);
    }
}
