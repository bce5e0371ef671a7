//! The ABI between the generated BPF program and user space: map names,
//! the verdict event record, reason and action codes, the counter layout,
//! and the `.l7.meta` section's JSON.
//!
//! The crate `l7c-abi` (this file is its root) also holds the vocabulary
//! both sides speak ([`http`], [`verdict`]) and the cgroup programs around
//! the verdict ([`enroll`]), so the runtime depends on it and on `l7c-bpf`,
//! not on the compiler.
//!
//! One source of truth: the code generator writes these layouts, the
//! kernel engine and the runtime read them, and both use this module, so
//! a field can never mean one thing on one side and another on the other.
//! Every layout is little-endian with explicit offsets (the BPF program
//! stores fields one by one at these offsets).

pub mod enroll;
pub mod http;
pub mod receive;
pub mod verdict;

use crate::http::{LimitKind, MalformedKind};
use crate::verdict::{Reason, VerdictAction};
use serde::{Deserialize, Serialize};

/// Names of the maps in every object, as symbols in `.maps`.
pub mod maps {
    /// SK_STORAGE: per-connection state.
    pub const CONNECTIONS: &str = "l7_conn";
    /// SOCKHASH the `sk_msg` program is attached to: enrolled sockets.
    pub const SOCKETS: &str = "l7_sockets";
    /// SOCKMAP of redirect targets, by slot (`Meta::redirect_slots`).
    pub const REDIRECTS: &str = "l7_redirect";
    /// PERCPU_ARRAY of u64 verdict counters (see [`super::counter_index`]).
    pub const COUNTERS: &str = "l7_counters";
    /// RINGBUF of [`super::Event`] records.
    pub const EVENTS: &str = "l7_events";
    /// ARRAY of one u32: [`super::config`] flags set by user space.
    pub const CONFIG: &str = "l7_config";
    /// ARRAY of one [`super::gate`] record: enrollment capacity and use.
    pub const GATE: &str = "l7_gate";
    /// SK_STORAGE of one u32 per socket: 1 while the socket holds one unit
    /// of the gate's capacity (reserved at `connect()`, released at close).
    pub const GATE_MARKS: &str = "l7_gate_mark";
    /// ARRAY of u32 words, a bitmap of the remote ports some policy can
    /// select (bit `port % 32` of word `port / 32`), unless the gate's
    /// `all_ports` says every port.
    pub const GATE_PORTS: &str = "l7_gate_ports";
    /// HASH from [`super::sock_key`] to one [`super::peer`] record: what
    /// the two directions of an enrolled connection tell each other (the
    /// requests the server was sent, the answers it gave).
    pub const PEERS: &str = "l7_peer";
}

/// The record both programs of an enrolled connection share in
/// `maps::PEERS`, under the connection's [`sock_key`] (language.md §6:
/// deny answers and a switch's consent; issue 13).
///
/// The `sk_msg` program (the client's sends) counts the requests it
/// forwards to the server and notes each one's kind; the receive-side
/// `sk_skb` program (the server's bytes, `receive.rs`) frames the server's
/// responses and counts the final ones that ended. Neither can reach the
/// other's state otherwise: `sk_skb` has no `sk_storage_get`
/// (docs/receive-side-research.md, A1). The two never run at once on one
/// socket (A3).
///
/// The record is created zeroed when the connection is enrolled (the
/// `sock_ops` program, or the kernel engine's harness) and deleted when it
/// closes. A connection without its record is treated as [`LOST`]: no deny
/// after its first request is answered and no switch is opened (both fail
/// closed).
///
/// ```text
/// struct l7_peer {              // 64 bytes
///     __u32 forwarded;          //  0  sk_msg: requests sent on to the server
///     __u32 answered;           //  4  sk_skb: final responses that ended
///     __u32 flags;              //  8  LOST | SWITCH_ACCEPTED | SWITCH_REFUSED
///     __u32 rx[9];              // 12  sk_skb's private parser state
///     __u8  kinds[16];          // 48  sk_msg: kind of request i at [i % 16]
/// };
/// ```
pub mod peer {
    /// Offsets in the record.
    pub const FORWARDED: i16 = 0;
    pub const ANSWERED: i16 = 4;
    pub const FLAGS: i16 = 8;
    /// The receive parser's own words (`receive.rs` documents them).
    pub const RX: i16 = 12;
    pub const RX_BYTES: usize = 36;
    pub const KINDS: i16 = 48;
    /// Entries of the `kinds` ring: at most this many requests may be
    /// owed an answer at once; one more sets [`LOST`].
    pub const RING: u32 = 16;
    pub const SIZE: u32 = 64;

    /// `flags`: the framing of the server's bytes is lost (bytes nobody
    /// asked for, a malformed or unframed response, a full ring, no
    /// record). One-way.
    pub const LOST: u32 = 1 << 0;
    /// `flags`: the server agreed to the switch request it was answering
    /// (101 to an Upgrade, 2xx to CONNECT); the receive side parses no more.
    pub const SWITCH_ACCEPTED: u32 = 1 << 1;
    /// `flags`: the server's final status to a switch request was not
    /// consent; `sk_msg` clears it when the connection goes back to HTTP.
    pub const SWITCH_REFUSED: u32 = 1 << 2;

    /// `kinds[i % RING]`: what the response to request i may look like.
    pub const KIND_PLAIN: u8 = 0;
    /// A HEAD request: its response has no body.
    pub const KIND_HEAD: u8 = 1;
    /// A request with an `Upgrade` field: 101 is consent.
    pub const KIND_UPGRADE: u8 = 2;
    /// A CONNECT request: any 2xx is consent (and has no body).
    pub const KIND_CONNECT: u8 = 3;

    /// The record's fields, decoded (user space's side of the layout):
    /// what `l7c_runtime::peer` reads and writes. Little-endian words at
    /// the offsets above.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Peer {
        pub forwarded: u32,
        pub answered: u32,
        pub flags: u32,
        /// The receive parser's words, opaque here (`receive.rs`).
        pub rx: [u8; RX_BYTES],
        pub kinds: [u8; RING as usize],
    }

    impl Default for Peer {
        /// A new connection's record: all zero.
        fn default() -> Peer {
            Peer { forwarded: 0, answered: 0, flags: 0, rx: [0; RX_BYTES], kinds: [0; RING as usize] }
        }
    }

    impl Peer {
        pub fn to_bytes(&self) -> [u8; SIZE as usize] {
            let mut out = [0u8; SIZE as usize];
            let mut put = |at: i16, bytes: &[u8]| {
                // The offsets are constants inside the 64-byte record
                // (`the_layout_fills_the_record` checks them).
                let at = at as usize;
                out[at..at + bytes.len()].copy_from_slice(bytes);
            };
            put(FORWARDED, &self.forwarded.to_le_bytes());
            put(ANSWERED, &self.answered.to_le_bytes());
            put(FLAGS, &self.flags.to_le_bytes());
            put(RX, &self.rx);
            put(KINDS, &self.kinds);
            out
        }

        /// Reads a record; `None` when `bytes` is shorter than [`SIZE`].
        pub fn from_bytes(bytes: &[u8]) -> Option<Peer> {
            let field = |at: i16, len: usize| bytes.get(usize::try_from(at).ok()?..).and_then(|rest| rest.get(..len));
            let word = |at: i16| Some(u32::from_le_bytes(field(at, 4)?.try_into().ok()?));
            Some(Peer {
                forwarded: word(FORWARDED)?,
                answered: word(ANSWERED)?,
                flags: word(FLAGS)?,
                rx: field(RX, RX_BYTES)?.try_into().ok()?,
                kinds: field(KINDS, RING as usize)?.try_into().ok()?,
            })
        }

        /// Whether the receive side gave up framing ([`LOST`]).
        pub fn lost(&self) -> bool {
            self.flags & LOST != 0
        }

        /// Notes request `kind` as forwarded, as the `sk_msg` program
        /// does: `kinds[forwarded % RING] = kind; forwarded += 1`.
        pub fn forward(&mut self, kind: u8) {
            // `% RING` is below the array's length.
            self.kinds[(self.forwarded % RING) as usize] = kind;
            self.forwarded = self.forwarded.wrapping_add(1);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_layout_fills_the_record() {
            assert_eq!(FORWARDED + 4, ANSWERED);
            assert_eq!(ANSWERED + 4, FLAGS);
            assert_eq!(FLAGS + 4, RX);
            assert_eq!(RX as usize + RX_BYTES, KINDS as usize);
            assert_eq!(KINDS as u32 + RING, SIZE);
            assert!(RING.is_power_of_two(), "the programs index the ring with `& (RING - 1)`");
        }

        #[test]
        fn records_round_trip() {
            let mut peer = Peer { answered: 3, flags: SWITCH_REFUSED, ..Peer::default() };
            for (i, kind) in [KIND_PLAIN, KIND_HEAD, KIND_UPGRADE, KIND_CONNECT].iter().cycle().take(19).enumerate() {
                peer.forward(*kind);
                peer.rx[i % RX_BYTES] = i as u8;
            }
            assert_eq!(peer.forwarded, 19);
            assert_eq!(peer.kinds[2], KIND_UPGRADE, "request 18 (an upgrade) overwrote slot 2");
            let bytes = peer.to_bytes();
            assert_eq!(bytes.len(), SIZE as usize);
            assert_eq!(bytes[ANSWERED as usize], 3);
            assert_eq!(Peer::from_bytes(&bytes), Some(peer));
            assert_eq!(Peer::from_bytes(&bytes[..63]), None);
            assert!(!peer.lost());
        }
    }
}

/// The key of the enrollment socket hash (`maps::SOCKETS`): a
/// connection's 4-tuple, laid out so that the `sock_ops` program builds it
/// from `struct bpf_sock_ops` with plain 4-byte copies, the `sk_msg`
/// program from `struct sk_msg_md` the same way (its self redirect), and
/// user space from the socket's addresses ([`sock_key::encode`]) — and
/// reads it back ([`sock_key::decode`]).
///
/// ```text
/// struct l7_sock_key {          // 44 bytes, no padding
///     __u32 family;             //  0  AF_INET (2) or AF_INET6 (10)
///     __u32 remote_ip[4];       //  4  network order; IPv4: [remote_ip4, 0, 0, 0]
///     __u32 local_ip[4];        // 20  network order; IPv4: [local_ip4, 0, 0, 0]
///     __u32 remote_port;        // 36  as the context reads it: bytes [0, 0, hi, lo]
///     __u32 local_port;         // 40  host order, as the context reads it
/// };
/// ```
///
/// `remote_port` is copied verbatim from the contexts: the kernel loads
/// the 16-bit network-order port into the upper half of the u32 (memory
/// bytes `[0, 0, hi, lo]`, measured in `runtime/tests/mechanics.rs`);
/// `local_port` is a host-order u32. Nothing is converted on either side.
pub mod sock_key {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    pub const FAMILY: usize = 0;
    pub const REMOTE_IP: usize = 4;
    pub const LOCAL_IP: usize = 20;
    pub const REMOTE_PORT: usize = 36;
    pub const LOCAL_PORT: usize = 40;
    /// The key's size: the `key_size` of `l7_sockets`.
    pub const SIZE: usize = 44;
    /// `AF_INET` and `AF_INET6` as the contexts' `family` holds them.
    pub const AF_INET: u32 = 2;
    pub const AF_INET6: u32 = 10;

    /// The key of the socket whose own address is `local`, connected to
    /// `remote`.
    pub fn encode(local: SocketAddr, remote: SocketAddr) -> [u8; SIZE] {
        let mut key = [0u8; SIZE];
        let family = match local.ip() {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        key[FAMILY..FAMILY + 4].copy_from_slice(&family.to_ne_bytes());
        key[REMOTE_IP..REMOTE_IP + 16].copy_from_slice(&ip_bytes(remote.ip()));
        key[LOCAL_IP..LOCAL_IP + 16].copy_from_slice(&ip_bytes(local.ip()));
        let [hi, lo] = remote.port().to_be_bytes();
        key[REMOTE_PORT..REMOTE_PORT + 4].copy_from_slice(&[0, 0, hi, lo]);
        key[LOCAL_PORT..LOCAL_PORT + 4].copy_from_slice(&u32::from(local.port()).to_ne_bytes());
        key
    }

    /// The (local, remote) addresses of a key; `None` if it is not one.
    pub fn decode(key: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
        if key.len() != SIZE {
            return None;
        }
        let word = |at: usize| -> Option<[u8; 4]> { key.get(at..at + 4)?.try_into().ok() };
        let family = u32::from_ne_bytes(word(FAMILY)?);
        let ip = |at: usize| -> Option<IpAddr> {
            let bytes: [u8; 16] = key.get(at..at + 16)?.try_into().ok()?;
            match family {
                AF_INET => {
                    let [a, b, c, d, ..] = bytes;
                    Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
                }
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
                _ => None,
            }
        };
        let local_port = u16::try_from(u32::from_ne_bytes(word(LOCAL_PORT)?)).ok()?;
        Some((SocketAddr::new(ip(LOCAL_IP)?, local_port), SocketAddr::new(ip(REMOTE_IP)?, remote_port(u32::from_ne_bytes(word(REMOTE_PORT)?)))))
    }

    /// The raw (remote port, local port) words of a key, as events carry
    /// them.
    pub fn ports(key: &[u8]) -> Option<(u32, u32)> {
        let word = |at: usize| -> Option<u32> { Some(u32::from_ne_bytes(key.get(at..at + 4)?.try_into().ok()?)) };
        Some((word(REMOTE_PORT)?, word(LOCAL_PORT)?))
    }

    /// A remote port in host order from the contexts' raw word (bytes
    /// `[0, 0, hi, lo]`).
    pub fn remote_port(raw: u32) -> u16 {
        let [_, _, hi, lo] = raw.to_ne_bytes();
        u16::from_be_bytes([hi, lo])
    }

    /// The 16 address bytes: IPv4 in the first word, network order.
    fn ip_bytes(ip: IpAddr) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        bytes
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_round_trip_for_both_families() {
            for (local, remote) in [
                ("127.0.0.1:40000", "127.0.0.2:80"),
                ("[::1]:40001", "[::1]:8080"),
                ("[::ffff:127.0.0.1]:40002", "[::ffff:10.1.2.3]:443"),
            ] {
                let (local, remote): (SocketAddr, SocketAddr) = (local.parse().unwrap(), remote.parse().unwrap());
                let key = encode(local, remote);
                assert_eq!(decode(&key), Some((local, remote)));
                let (raw_remote, raw_local) = ports(&key).unwrap();
                assert_eq!((remote_port(raw_remote), raw_local), (remote.port(), u32::from(local.port())));
            }
            assert_eq!(decode(&[0u8; 43]), None);
            assert_eq!(LOCAL_PORT + 4, SIZE);
        }

        #[test]
        fn the_remote_port_is_the_contexts_bytes() {
            let key = encode("127.0.0.1:1".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
            assert_eq!(key[REMOTE_PORT..REMOTE_PORT + 4], [0, 0, 0x1f, 0x90]);
        }
    }
}

/// The enrollment gate (`enroll.rs`): how many connections one generation
/// may police, how many it does, and what it refused. One record at index
/// 0 of [`maps::GATE`], every field a little-endian u64 at its offset. The
/// runtime writes `capacity` and `all_ports` before anything attaches; the
/// programs add to the rest atomically.
pub mod gate {
    /// Connections that may hold a reservation at once.
    pub const CAPACITY: i16 = 0;
    /// Reservations held now: a governed `connect()` takes one, its close
    /// gives it back.
    pub const USED: i16 = 8;
    /// `connect()` calls refused (EPERM) because `used >= capacity`.
    pub const REFUSED_FULL: i16 = 16;
    /// `connect()` calls refused because the socket is a stream socket
    /// that is not TCP (MPTCP, SCTP): the `sk_msg` program cannot see what
    /// it sends.
    pub const REFUSED_PROTOCOL: i16 = 24;
    /// Established governed connections `sock_hash_update` could not
    /// enroll (the map full despite the gate): each one is unpoliced, and
    /// the runtime reports it as an error.
    pub const UNENROLLED: i16 = 32;
    /// Non-zero: every remote port is governed (some policy selects any
    /// port), the bitmap is not read.
    pub const ALL_PORTS: i16 = 40;
    /// Events the verdict program could not write because the ring buffer
    /// was full (`ringbuf_output` failed): lost, and counted here, also
    /// while no agent reads the buffer.
    pub const EVENTS_LOST: i16 = 48;
    /// Size of the record.
    pub const SIZE: u32 = 56;
    /// Words of the port bitmap: 65,536 ports, 32 per word.
    pub const PORT_WORDS: u32 = 2048;

    /// The record's fields, decoded (user space's side of the layout).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Gate {
        pub capacity: u64,
        pub used: u64,
        pub refused_full: u64,
        pub refused_protocol: u64,
        pub unenrolled: u64,
        pub all_ports: u64,
        pub events_lost: u64,
    }

    impl Gate {
        pub fn to_bytes(&self) -> Vec<u8> {
            [self.capacity, self.used, self.refused_full, self.refused_protocol, self.unenrolled, self.all_ports, self.events_lost]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }

        pub fn from_bytes(bytes: &[u8]) -> Option<Gate> {
            let field = |at: i16| -> Option<u64> {
                let at = usize::try_from(at).ok()?;
                Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
            };
            Some(Gate {
                capacity: field(CAPACITY)?,
                used: field(USED)?,
                refused_full: field(REFUSED_FULL)?,
                refused_protocol: field(REFUSED_PROTOCOL)?,
                unenrolled: field(UNENROLLED)?,
                all_ports: field(ALL_PORTS)?,
                events_lost: field(EVENTS_LOST)?,
            })
        }
    }

    /// The port bitmap's words for `ports` (`None`: every port, an empty
    /// bitmap with `all_ports` set).
    pub fn port_words(ports: Option<&[u16]>) -> Vec<u32> {
        let mut words = vec![0u32; PORT_WORDS as usize];
        for &port in ports.unwrap_or(&[]) {
            words[usize::from(port / 32)] |= 1 << (port % 32);
        }
        words
    }
}

/// Bits of the config map's single u32.
pub mod config {
    /// Report every verdict as an event, not only logged rules and audit
    /// mode (what the kernel engine uses to read verdicts).
    pub const EVENTS_ALL: u32 = 1 << 0;
    /// Index of the config map's flags word (the bits above).
    pub const FLAGS: u32 = 0;
    /// Index of the word whose bit `slot` says redirect slot `slot` is
    /// bound (read in audit mode, where a redirect must not act: the
    /// runtime keeps it in step with `l7_redirect`; slots 0..=31).
    pub const BOUND_SLOTS: u32 = 1;
    /// Entries of the config map.
    pub const ENTRIES: u32 = 2;
}

/// Action codes in events.
pub const fn action_code(action: VerdictAction) -> u8 {
    match action {
        VerdictAction::Allow => 0,
        VerdictAction::Deny => 1,
        VerdictAction::Redirect => 2,
        VerdictAction::Tunnel => 3,
    }
}

pub fn action_from_code(code: u8) -> Option<VerdictAction> {
    [VerdictAction::Allow, VerdictAction::Deny, VerdictAction::Redirect, VerdictAction::Tunnel]
        .into_iter()
        .find(|a| action_code(*a) == code)
}

/// A reason as (class, kind) bytes: the class says which reason, the kind
/// indexes `MalformedKind::ALL` or `LimitKind::ALL` for those classes.
pub fn reason_code(reason: Reason) -> (u8, u8) {
    match reason {
        Reason::Rule => (0, 0),
        Reason::Default => (1, 0),
        Reason::Malformed(kind) => (2, MalformedKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8),
        Reason::Limit(kind) => (3, LimitKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8),
        Reason::Opaque => (4, 0),
        Reason::Tunnel => (5, 0),
        Reason::RedirectUnbound => (6, 0),
        Reason::Http2 => (8, 0),
    }
}

pub fn reason_from_code(class: u8, kind: u8) -> Option<Reason> {
    Some(match class {
        0 => Reason::Rule,
        1 => Reason::Default,
        2 => Reason::Malformed(*MalformedKind::ALL.get(usize::from(kind))?),
        3 => Reason::Limit(*LimitKind::ALL.get(usize::from(kind))?),
        4 => Reason::Opaque,
        5 => Reason::Tunnel,
        6 => Reason::RedirectUnbound,
        8 => Reason::Http2,
        _ => return None,
    })
}

/// Denials for a failed helper: the program could not judge the bytes
/// (reason class [`internal::CLASS`]). The language's reasons describe
/// requests; these describe the kernel program, so they live only in the
/// ABI: counted in their own slots, reported in events, and turned into an
/// error by the kernel engine (never into a verdict the reference could
/// give).
pub mod internal {
    pub const CLASS: u8 = 7;
    /// `bpf_msg_pull_data` failed.
    pub const PULL_DATA: u8 = 0;
    /// A run found nothing to take (never expected: fail closed).
    pub const NOTHING_TAKEN: u8 = 1;
    /// A head is incomplete at the end of a message the kernel did not map
    /// (`data == data_end`: every kTLS record), where a cork would never
    /// run the program again: a head split across kTLS records.
    pub const SPLIT_HEAD_UNMAPPED: u8 = 2;
    /// Kinds by code, as counters and events name them (`internal:<name>`).
    pub const NAMES: [&str; 3] = ["pull-data", "nothing-taken", "ktls-split-head"];

    /// The counter slot of an internal denial of `kind`.
    pub fn slot(kind: u8) -> usize {
        super::REASON_SLOTS - NAMES.len() + usize::from(kind).min(NAMES.len() - 1)
    }
}

/// The number of distinct reasons (class, kind) a counter can be kept for:
/// the language's reasons, then the internal ones.
pub const REASON_SLOTS: usize = SINGLE_REASONS + MalformedKind::ALL.len() + LimitKind::ALL.len() + internal::NAMES.len();

/// The reasons without a kind, in slot order: their counter slots come
/// first, then the malformed kinds, the limits and the internal ones.
pub const SINGLE_REASONS: usize = 6;
/// (reason, slot) of [`SINGLE_REASONS`], for the generated program.
pub const SINGLE_REASON_SLOTS: [(Reason, usize); SINGLE_REASONS] = [
    (Reason::Rule, 0),
    (Reason::Default, 1),
    (Reason::Opaque, 2),
    (Reason::Tunnel, 3),
    (Reason::RedirectUnbound, 4),
    (Reason::Http2, 5),
];

/// The slot of a reason among the per-reason counters.
pub fn reason_slot(reason: Reason) -> usize {
    match reason {
        Reason::Rule => 0,
        Reason::Default => 1,
        Reason::Opaque => 2,
        Reason::Tunnel => 3,
        Reason::RedirectUnbound => 4,
        Reason::Http2 => 5,
        Reason::Malformed(kind) => SINGLE_REASONS + MalformedKind::ALL.iter().position(|k| *k == kind).unwrap_or(0),
        Reason::Limit(kind) => {
            SINGLE_REASONS + MalformedKind::ALL.len() + LimitKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
        }
    }
}

/// Counter layout of the COUNTERS map, per policy: first one counter per
/// reason slot, then one per rule. `rules_before` is the number of rules of
/// the policies before this one, `policy` its index.
pub fn counter_index(policy: usize, rules_before: usize, counter: Counter) -> usize {
    let base = policy * REASON_SLOTS + rules_before;
    match counter {
        Counter::Reason(reason) => base + reason_slot(reason),
        Counter::Rule(rule) => base + REASON_SLOTS + rule,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Reason(Reason),
    /// Verdicts decided by rule `n` of the policy.
    Rule(usize),
}

/// `rule` value meaning "no rule decided".
pub const NO_RULE: u32 = u32::MAX;

/// One verdict as the program reports it on the ring buffer. 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event {
    /// `bpf_ktime_get_ns()` when the verdict was given.
    pub time_ns: u64,
    /// Stream offset of the request's first byte (the verdict's start).
    pub start: u64,
    /// Stream offset one past the request's declared end (head plus
    /// Content-Length; for a chunked body, its end as far as known).
    pub end: u64,
    /// The request's index on the connection.
    pub index: u32,
    /// The rule that decided (index in its policy), or [`NO_RULE`].
    pub rule: u32,
    /// The policy's index in the compilation.
    pub policy: u16,
    pub action: u8,
    /// Reason class and kind ([`reason_code`]).
    pub reason_class: u8,
    pub reason_kind: u8,
    /// [`event_flags`].
    pub flags: u8,
    /// What the record is: [`record::VERDICT`] or [`record::SPAN_END`].
    pub record: u8,
    pub _pad: u8,
    /// The socket's ports (remote in network order as the kernel gives it,
    /// local in host order).
    pub remote_port: u32,
    pub local_port: u32,
    /// `bpf_get_current_pid_tgid()` of the sending process (tgid << 32 | tid).
    pub pid_tgid: u64,
    /// `bpf_get_current_cgroup_id()`: the sending process's cgroup v2 id.
    pub cgroup_id: u64,
}

/// Bits of [`Event::flags`].
pub mod event_flags {
    /// The policy runs in audit mode: the verdict was not enforced.
    pub const AUDIT: u8 = 1 << 0;
    /// The deciding rule says `log`.
    pub const LOGGED: u8 = 1 << 1;
    /// The request has a chunked body: its end is reported later by a
    /// [`super::record::SPAN_END`] record, or is the end of the input.
    pub const CHUNKED: u8 = 1 << 2;
    /// A redirect given in a message the kernel held (a cork) with bytes
    /// after the redirected request: the kernel frees those bytes with the
    /// held message, so the connection is closed after this verdict
    /// (docs/kernel-mechanics.md, "Redirects and held messages").
    pub const HELD_TAIL: u8 = 1 << 3;
    /// A deny the program answered over HTTP (language.md §6): the client
    /// reads the answer `verdict::answer_bytes` makes.
    pub const ANSWERED: u8 = 1 << 4;
    /// A deny whose reason is answered but which the program could not
    /// answer without overtaking the server's answer (or the connection's
    /// record was missing or lost): it fell back to `reset`.
    pub const FALLBACK_RESET: u8 = 1 << 5;
}

/// Kinds of ring buffer records.
pub mod record {
    /// A verdict on request `index`.
    pub const VERDICT: u8 = 0;
    /// The end of request `index`'s span is now known (`end`): the end of
    /// a chunked body, or the offending byte that cut it.
    pub const SPAN_END: u8 = 1;
}

pub mod span_rules {
    //! How an engine turns records into the verdicts of `l7c eval` (the same
    //! JSON as the reference engine). The program cannot know where the input
    //! ends, so the engine completes these spans with the input's length:
    //! - a deny in enforce mode ends at the end of the input, and so does
    //!   every tunnel verdict (its switch takes the rest of the connection);
    //! - a connection-start verdict (`deny opaque`, `tunnel opaque`,
    //!   `deny http2`) spans the whole input;
    //! - in audit mode, a would-be `malformed`, `limit`, `opaque` or `http2`
    //!   deny ends at the end of the input (framing is lost), and so does a
    //!   would-be `deny tunnel` of bytes sent before a switch's answer (its
    //!   reported end is not after its start: whether the server switched
    //!   is unknown);
    //! - a chunked request with no [`record::SPAN_END`] ends at the end of the
    //!   input (its body was cut off there).
    //!
    //! `pending` is the bytes `send()` accepted that reached neither the peer
    //! nor a redirect target, and 0 after an enforced deny (the kernel drops
    //! the held bytes with the connection).
}

impl Event {
    pub const SIZE: usize = 64;
    pub const OFFSET_TIME: i16 = 0;
    pub const OFFSET_START: i16 = 8;
    pub const OFFSET_END: i16 = 16;
    pub const OFFSET_INDEX: i16 = 24;
    pub const OFFSET_RULE: i16 = 28;
    pub const OFFSET_POLICY: i16 = 32;
    pub const OFFSET_ACTION: i16 = 34;
    pub const OFFSET_REASON_CLASS: i16 = 35;
    pub const OFFSET_REASON_KIND: i16 = 36;
    pub const OFFSET_FLAGS: i16 = 37;
    pub const OFFSET_RECORD: i16 = 38;
    pub const OFFSET_REMOTE_PORT: i16 = 40;
    pub const OFFSET_LOCAL_PORT: i16 = 44;
    pub const OFFSET_PID_TGID: i16 = 48;
    pub const OFFSET_CGROUP_ID: i16 = 56;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let mut put = |offset: i16, bytes: &[u8]| {
            let at = offset as usize;
            out[at..at + bytes.len()].copy_from_slice(bytes);
        };
        put(Self::OFFSET_TIME, &self.time_ns.to_le_bytes());
        put(Self::OFFSET_START, &self.start.to_le_bytes());
        put(Self::OFFSET_END, &self.end.to_le_bytes());
        put(Self::OFFSET_INDEX, &self.index.to_le_bytes());
        put(Self::OFFSET_RULE, &self.rule.to_le_bytes());
        put(Self::OFFSET_POLICY, &self.policy.to_le_bytes());
        put(Self::OFFSET_ACTION, &[self.action]);
        put(Self::OFFSET_REASON_CLASS, &[self.reason_class]);
        put(Self::OFFSET_REASON_KIND, &[self.reason_kind]);
        put(Self::OFFSET_FLAGS, &[self.flags]);
        put(Self::OFFSET_RECORD, &[self.record]);
        put(Self::OFFSET_REMOTE_PORT, &self.remote_port.to_le_bytes());
        put(Self::OFFSET_LOCAL_PORT, &self.local_port.to_le_bytes());
        put(Self::OFFSET_PID_TGID, &self.pid_tgid.to_le_bytes());
        put(Self::OFFSET_CGROUP_ID, &self.cgroup_id.to_le_bytes());
        out
    }

    /// Read a record; `None` when it is shorter than [`Event::SIZE`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        let field = |offset: i16, len: usize| bytes.get(offset as usize..offset as usize + len);
        let u64_at = |offset| field(offset, 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let u32_at = |offset| field(offset, 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let u16_at = |offset| field(offset, 2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes);
        let u8_at = |offset| field(offset, 1).and_then(|b| b.first().copied());
        Some(Event {
            time_ns: u64_at(Self::OFFSET_TIME)?,
            start: u64_at(Self::OFFSET_START)?,
            end: u64_at(Self::OFFSET_END)?,
            index: u32_at(Self::OFFSET_INDEX)?,
            rule: u32_at(Self::OFFSET_RULE)?,
            policy: u16_at(Self::OFFSET_POLICY)?,
            action: u8_at(Self::OFFSET_ACTION)?,
            reason_class: u8_at(Self::OFFSET_REASON_CLASS)?,
            reason_kind: u8_at(Self::OFFSET_REASON_KIND)?,
            flags: u8_at(Self::OFFSET_FLAGS)?,
            record: u8_at(Self::OFFSET_RECORD)?,
            _pad: 0,
            remote_port: u32_at(Self::OFFSET_REMOTE_PORT)?,
            local_port: u32_at(Self::OFFSET_LOCAL_PORT)?,
            pid_tgid: u64_at(Self::OFFSET_PID_TGID)?,
            cgroup_id: u64_at(Self::OFFSET_CGROUP_ID)?,
        })
    }
}

/// The `.l7.meta` section: what user space needs to name what the program
/// reports (cli.md: policy names, rule ids to names, redirect slots,
/// limits, a hash of the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Version of this layout.
    pub abi: u32,
    pub policies: Vec<MetaPolicy>,
    /// Redirect target name → slot in the REDIRECTS map.
    pub redirect_slots: Vec<(String, u32)>,
    /// FNV-1a 64 of the sources, in hex: it names a build so user space can
    /// tell which policy is loaded; it is not a security boundary.
    pub source_hash: String,
    /// The remote ports some policy's scope can select; `None`: any port
    /// (a policy without a remote-port scope). Connections to other ports
    /// are not enrolled and take no capacity (docs/runtime.md, "Capacity").
    #[serde(default)]
    pub governed_ports: Option<Vec<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPolicy {
    pub name: String,
    /// Rule names by rule index.
    pub rules: Vec<String>,
    pub audit: bool,
    pub header_bytes: u32,
    pub headers: u32,
}

impl Meta {
    pub const ABI_VERSION: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let event = Event {
            time_ns: 1,
            start: 2,
            end: 3,
            index: 4,
            rule: NO_RULE,
            policy: 5,
            action: action_code(VerdictAction::Deny),
            reason_class: 2,
            reason_kind: 7,
            flags: event_flags::AUDIT | event_flags::CHUNKED,
            record: record::SPAN_END,
            _pad: 0,
            remote_port: 8,
            local_port: 9,
            pid_tgid: 10 << 32 | 11,
            cgroup_id: 12,
        };
        assert_eq!(Event::from_bytes(&event.to_bytes()), Some(event));
        assert_eq!(Event::from_bytes(&[0; 63]), None);
    }

    #[test]
    fn every_reason_has_a_code_and_a_slot() {
        let mut reasons = vec![Reason::Rule, Reason::Default, Reason::Opaque, Reason::Tunnel, Reason::RedirectUnbound, Reason::Http2];
        reasons.extend(MalformedKind::ALL.map(Reason::Malformed));
        reasons.extend(LimitKind::ALL.map(Reason::Limit));
        let mut slots: Vec<usize> = reasons.iter().map(|r| reason_slot(*r)).collect();
        for reason in &reasons {
            let (class, kind) = reason_code(*reason);
            assert_eq!(reason_from_code(class, kind), Some(*reason));
        }
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), reasons.len(), "slots are distinct");
        assert!(slots.iter().all(|s| *s < internal::slot(0)));
        assert_eq!(internal::slot(internal::SPLIT_HEAD_UNMAPPED), REASON_SLOTS - 1);
        assert_eq!(internal::NAMES.len(), usize::from(internal::SPLIT_HEAD_UNMAPPED) + 1);
        for action in [VerdictAction::Allow, VerdictAction::Deny, VerdictAction::Redirect, VerdictAction::Tunnel] {
            assert_eq!(action_from_code(action_code(action)), Some(action));
        }
    }
}
