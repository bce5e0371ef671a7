//! The key of the enrollment socket hash, as user space holds it: a
//! connection's two addresses. The byte layout, its encoding and its
//! decoding live in one place, `l7c_abi::sock_key` (with the
//! generated programs' view of it); this is the runtime's handle on it.
//!
//! The socket enrolled is the one that sends the requests: for `l7c run`,
//! the connection's local end as the `sock_ops` program sees it on
//! `ACTIVE_ESTABLISHED_CB`; in the harness, the client socket.

use std::net::SocketAddr;

use l7c_abi::sock_key;
pub use l7c_abi::sock_key::{AF_INET, AF_INET6};

/// Size of [`SockKey`] in bytes: the `key_size` of the enrollment map.
pub const SOCK_KEY_SIZE: usize = sock_key::SIZE;

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
        sock_key::encode(self.local, self.remote)
    }

    /// The key whose bytes are `bytes`, if they are one.
    pub fn from_bytes(bytes: &[u8]) -> Option<SockKey> {
        sock_key::decode(bytes).map(|(local, remote)| SockKey { local, remote })
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
