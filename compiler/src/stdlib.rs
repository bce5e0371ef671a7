//! The standard library: `.l7` modules from `stdlib/`, embedded in the
//! binary and imported as `std/<name>`. They are ordinary `.l7` files: the
//! test suite checks and tests each of them like any other.

/// Every module, by the name after `std/`.
pub const MODULES: &[(&str, &str)] = &[
    ("http", include_str!("../../stdlib/http.l7")),
    ("sensitive", include_str!("../../stdlib/sensitive.l7")),
    ("hardened", include_str!("../../stdlib/hardened.l7")),
];

/// The text of `std/<name>`.
pub fn module(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}
