//! Overlapping scopes (language.md §4): two policies whose scopes can
//! select the same connection are an error, because a connection is
//! governed by at most one policy.
//!
//! A scope is an AND of kinds (remote port, remote address, local port,
//! local address), each an OR of values; a kind left out selects
//! everything. Two scopes overlap when every kind overlaps.

use crate::model::{Cidr, Scope};
use std::net::IpAddr;

/// When the two scopes can select one connection, a description of such
/// connections (`remote port 8080`, or `every connection`).
pub(crate) fn overlap(a: &Scope, b: &Scope) -> Option<String> {
    let mut parts = Vec::new();
    let ports = [("remote port", &a.remote_ports, &b.remote_ports), ("local port", &a.local_ports, &b.local_ports)];
    for (kind, x, y) in ports {
        if let Some(port) = common(x.as_deref(), y.as_deref(), |p, q| (p == q).then_some(*p))? {
            parts.push(format!("{kind} {port}"));
        }
    }
    let addrs = [("remote addr", &a.remote_addrs, &b.remote_addrs), ("local addr", &a.local_addrs, &b.local_addrs)];
    for (kind, x, y) in addrs {
        if let Some(block) = common(x.as_deref(), y.as_deref(), cidr_intersection)? {
            parts.push(format!("{kind} {block}"));
        }
    }
    Some(if parts.is_empty() { "every connection".to_string() } else { parts.join(" and ") })
}

/// For one kind: `None` when the two lists select nothing in common;
/// `Some(None)` when neither side constrains the kind; `Some(Some(v))`
/// with a value both select.
fn common<T: Clone>(x: Option<&[T]>, y: Option<&[T]>, meet: impl Fn(&T, &T) -> Option<T>) -> Option<Option<T>> {
    match (x, y) {
        (None, None) => Some(None),
        (Some(values), None) | (None, Some(values)) => values.first().cloned().map(Some),
        (Some(xs), Some(ys)) => xs.iter().find_map(|p| ys.iter().find_map(|q| meet(p, q))).map(Some),
    }
}

/// The addresses two blocks share, as a block, if any. An IPv4 block also
/// selects the IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), so it meets
/// an IPv6 block in the mapped range.
fn cidr_intersection(a: &Cidr, b: &Cidr) -> Option<Cidr> {
    let (a, b) = match (a.addr, b.addr) {
        (IpAddr::V4(_), IpAddr::V6(_)) => (mapped(a), *b),
        (IpAddr::V6(_), IpAddr::V4(_)) => (*a, mapped(b)),
        _ => (*a, *b),
    };
    if !a.overlaps(&b) {
        return None;
    }
    // Nested blocks (the only way two blocks overlap): the longer is inside.
    Some(if a.prefix_len >= b.prefix_len { a } else { b })
}

/// An IPv4 block as the block of IPv4-mapped IPv6 addresses it selects.
fn mapped(cidr: &Cidr) -> Cidr {
    match cidr.addr {
        IpAddr::V4(v4) => Cidr { addr: IpAddr::V6(v4.to_ipv6_mapped()), prefix_len: cidr.prefix_len.saturating_add(96) },
        IpAddr::V6(_) => *cidr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        let (addr, len) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr.parse().unwrap();
        let prefix_len = len.parse().unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Cidr { addr, prefix_len }
    }

    fn ports(list: &[u16]) -> Option<Vec<u16>> {
        Some(list.to_vec())
    }

    #[test]
    fn unscoped_policies_overlap_everything() {
        let everything = Scope::default();
        assert_eq!(overlap(&everything, &everything).as_deref(), Some("every connection"));
        let port = Scope { remote_ports: ports(&[8080]), ..Scope::default() };
        assert_eq!(overlap(&everything, &port).as_deref(), Some("remote port 8080"));
    }

    #[test]
    fn ports_and_kinds() {
        let a = Scope { remote_ports: ports(&[80, 8080]), ..Scope::default() };
        let b = Scope { remote_ports: ports(&[8080, 443]), ..Scope::default() };
        let c = Scope { remote_ports: ports(&[443]), ..Scope::default() };
        assert_eq!(overlap(&a, &b).as_deref(), Some("remote port 8080"));
        assert_eq!(overlap(&a, &c), None);
        // Different kinds combine with AND: a local port does not separate
        // them from a remote one.
        let local = Scope { local_ports: ports(&[9000]), ..Scope::default() };
        assert_eq!(overlap(&a, &local).as_deref(), Some("remote port 80 and local port 9000"));
        // An empty list selects nothing.
        let none = Scope { remote_ports: ports(&[]), ..Scope::default() };
        assert_eq!(overlap(&none, &Scope::default()), None);
    }

    #[test]
    fn addresses_including_mapped_ipv4() {
        let a = Scope { remote_addrs: Some(vec![cidr("10.0.0.0/8")]), ..Scope::default() };
        let b = Scope { remote_addrs: Some(vec![cidr("10.1.0.0/16")]), ..Scope::default() };
        let c = Scope { remote_addrs: Some(vec![cidr("192.168.0.0/16")]), ..Scope::default() };
        assert_eq!(overlap(&a, &b).as_deref(), Some("remote addr 10.1.0.0/16"));
        assert_eq!(overlap(&a, &c), None);
        // `::/0` holds the IPv4-mapped addresses, which an IPv4 block selects.
        let v6_all = Scope { remote_addrs: Some(vec![cidr("::/0")]), ..Scope::default() };
        assert!(overlap(&a, &v6_all).is_some());
        assert!(overlap(&v6_all, &a).is_some());
        let v6_doc = Scope { remote_addrs: Some(vec![cidr("2001:db8::/32")]), ..Scope::default() };
        assert_eq!(overlap(&a, &v6_doc), None);
        // Disjoint ports separate overlapping addresses.
        let a_port = Scope { remote_ports: ports(&[80]), ..a.clone() };
        let b_port = Scope { remote_ports: ports(&[81]), ..b };
        assert_eq!(overlap(&a_port, &b_port), None);
    }
}
