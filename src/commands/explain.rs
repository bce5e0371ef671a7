//! `l7c explain FILE --request STRING`: canonicalization, each rule tried
//! and why it held or failed, and the verdicts, for one stream. The request
//! takes the escapes of `.l7` strings (`\r\n`, `\xHH`), so it fits in one
//! shell argument.

use super::{compile_or_report, ConnectionArgs};
use crate::{usage_error, Status};
use l7c_compiler::eval;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file
    file: PathBuf,
    /// The bytes the client sends, with `\r`, `\n`, `\t`, `\\`, `\"`, `\xHH` escapes
    #[arg(long, value_name = "STRING")]
    request: String,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub fn run(args: Args) -> Status {
    let input = match l7c_compiler::text::decode_escapes(&args.request) {
        (bytes, bad) if bad.is_empty() => bytes,
        (_, bad) => {
            let first = &bad[0];
            return usage_error(format!("`--request`: {} (at byte {}); {}", first.message, first.at, first.help));
        }
    };
    let (_, checked) = match compile_or_report(std::slice::from_ref(&args.file)) {
        Ok(compiled) => compiled,
        Err(status) => return status,
    };
    crate::out!(
        "{}",
        eval::explain(checked.program(), args.connection.connection(), &args.connection.bind, &input)
    );
    Status::Ok
}
