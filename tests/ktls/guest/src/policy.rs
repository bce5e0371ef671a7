//! The compiled policies the policy checks enforce beneath kTLS: the
//! repository's `examples/payments.l7` (scope: remote ports 8080 and 8443;
//! `opaque` left at its default, `deny`) and `tests/ktls/tls-fallback.l7`
//! (the same kind of API with `opaque allow`), compiled in the guest by the
//! same calls as `l7c compile` (`driver` → `codegen::compile`) and loaded
//! with the runtime library.
//!
//! While the code generator refuses a policy, [`compile`] says why and the
//! checks that need it are reported `SKIPPED` with that reason; once it
//! produces an object, they run without any change here.

use std::net::TcpStream;
use std::os::fd::AsFd;

use l7c_compiler::abi::{self, Event, Meta};
use l7c_compiler::codegen::{self, CodegenError, Options};
use l7c_compiler::driver;
use l7c_runtime::{KernelProgram, LoadOptions, SockKey};

/// The example policy, as shipped.
pub const PAYMENTS: Source =
    Source { name: "examples/payments.l7", text: include_str!("../../../../examples/payments.l7") };
/// A policy that lets a TLS stream it cannot read pass (`opaque allow`).
pub const TLS_FALLBACK: Source =
    Source { name: "tests/ktls/tls-fallback.l7", text: include_str!("../../tls-fallback.l7") };

/// Many policies in one program (issue 15, target 4): the scale file of
/// ../shared/bench/scale with 20 policies, and the generated one with 100
/// policies of 20 rules (tests/scale/generate.py).
pub const SCALE: [Source; 2] = [
    Source { name: "tests/scale/multi20.l7", text: include_str!("../../../scale/multi20.l7") },
    Source { name: "tests/scale/multi100x20.l7", text: include_str!("../../../scale/multi100x20.l7") },
];

/// A remote port both policies govern.
pub const GOVERNED_PORT: u16 = 8443;

#[derive(Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
}

/// A policy's object, or why there is none.
pub enum Compiled {
    Object {
        object: Vec<u8>,
        meta: Meta,
    },
    /// The code generator does not support the policy yet: the checks
    /// that need it are skipped with this reason.
    Refused(String),
}

/// Compiles `source` as `l7c compile` does. `Err` is a failure (the
/// policy does not check, or the generator broke), not a skip.
pub fn compile(source: Source) -> Result<Compiled, String> {
    let compilation = driver::compile_text(source.name, source.text, None);
    let Some(checked) = compilation.checked.as_ref().filter(|_| !compilation.diagnostics.has_errors()) else {
        let errors: Vec<String> =
            compilation.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.one_line(&compilation.sources)).collect();
        return Err(format!("`{}` does not check: {}", source.name, errors.join("; ")));
    };
    match codegen::compile(checked, &Options::default()) {
        Ok(compiled) => Ok(Compiled::Object { object: compiled.object, meta: compiled.meta }),
        Err(error @ CodegenError::Unsupported { .. }) => {
            Ok(Compiled::Refused(format!("l7c compile refuses `{}` (l7::codegen::unsupported): {error}", source.name)))
        }
        Err(error) => Err(format!("l7c compile failed on `{}`: {error}", source.name)),
    }
}

/// A compiled policy loaded into the kernel, reporting every verdict.
pub struct Loaded {
    pub program: KernelProgram,
    pub meta: Meta,
}

impl Loaded {
    pub fn load(object: &[u8], meta: &Meta) -> Result<Loaded, String> {
        let program = KernelProgram::load(object, &LoadOptions { program: None, attach_map: Some(abi::maps::SOCKETS) })
            .map_err(|e| format!("loading the compiled policy: {e}"))?;
        program
            .write_array(abi::maps::CONFIG, 0, &abi::config::EVENTS_ALL.to_ne_bytes())
            .map_err(|e| format!("turning on verdict events: {e}"))?;
        Ok(Loaded { program, meta: meta.clone() })
    }

    /// What the kernel's verifier processed loading it.
    pub fn verified_instruction_count(&self) -> Option<u32> {
        self.program.verified_instruction_count()
    }

    /// Enrolls the connection's sending socket, as the `sock_ops` program
    /// of `l7c run` would: its 4-tuple key in `l7_sockets`.
    pub fn enroll(&self, socket: &TcpStream) -> Result<(), String> {
        enroll(&self.program, abi::maps::SOCKETS, socket)
    }

    /// The verdicts reported since the last call, as `action reason
    /// ["rule"]` (e.g. `deny rule "sensitive"`, `deny opaque`).
    pub fn verdicts(&mut self) -> Result<Vec<String>, String> {
        let raw = self.program.drain_events(abi::maps::EVENTS).map_err(|e| e.to_string())?;
        let mut verdicts = Vec::new();
        for record in raw {
            let event =
                Event::from_bytes(&record).ok_or_else(|| format!("a verdict record of {} bytes", record.len()))?;
            if event.record != abi::record::VERDICT {
                continue;
            }
            verdicts.push(self.describe(&event));
        }
        Ok(verdicts)
    }

    fn describe(&self, event: &Event) -> String {
        let action = abi::action_from_code(event.action).map(|a| format!("{a:?}").to_lowercase());
        let reason = if event.reason_class == abi::internal::CLASS {
            abi::internal::NAMES.get(usize::from(event.reason_kind)).map(|name| format!("internal:{name}"))
        } else {
            abi::reason_from_code(event.reason_class, event.reason_kind).map(|r| r.name())
        };
        let rule = self
            .meta
            .policies
            .get(usize::from(event.policy))
            .and_then(|policy| policy.rules.get(event.rule as usize))
            .map(|name| format!(" \"{name}\""))
            .unwrap_or_default();
        format!(
            "{} {}{rule}",
            action.unwrap_or_else(|| format!("action#{}", event.action)),
            reason.unwrap_or_else(|| format!("reason#{}/{}", event.reason_class, event.reason_kind))
        )
    }
}

/// Puts `socket` into `map` under its `SockKey` (local = its own address).
pub fn enroll(program: &KernelProgram, map: &str, socket: &TcpStream) -> Result<(), String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let remote = socket.peer_addr().map_err(|e| e.to_string())?;
    program
        .insert_socket(map, &SockKey::new(local, remote).to_bytes(), socket.as_fd())
        .map_err(|e| format!("enrolling {local} → {remote}: {e}"))
}
