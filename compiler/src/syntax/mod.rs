//! Syntax: the grammar (`grammar/l7.pest`), the tree it builds, and the
//! builder between them. Nothing here knows what names mean.

pub mod ast;
pub mod parse;

pub use parse::parse;
