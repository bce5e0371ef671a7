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

/// Every list the standard library defines, as (module, name): what a
/// "did you mean" or a missing import can point to.
pub fn lists() -> Vec<(&'static str, String)> {
    let mut lists = Vec::new();
    for (module, text) in MODULES {
        // The modules parse (the test suite checks each); one that did not
        // would only give fewer suggestions.
        let Ok(file) = crate::syntax::parse(crate::source::FileId::default(), text) else { continue };
        for item in file.items {
            if let crate::syntax::ast::Item::Let(l) = item {
                lists.push((*module, l.name.name));
            }
        }
    }
    lists
}

/// The module (the name after `std/`) that defines the list `name`.
pub fn module_defining(name: &str) -> Option<&'static str> {
    lists().into_iter().find(|(_, list)| list == name).map(|(module, _)| module)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_are_found_in_their_modules() {
        assert_eq!(super::module_defining("WRITE"), Some("http"));
        assert_eq!(super::module_defining("SECRETS"), Some("sensitive"));
        assert_eq!(super::module_defining("RISKY_METHODS"), Some("hardened"));
        assert_eq!(super::module_defining("GET"), None);
    }
}
