//! The privileges l7c needs, in one list: every command that touches the
//! kernel checks it before it starts ([`missing`]), `l7c probe` reports it,
//! and [`PRIVILEGE_HELP`] (the advice every refusal prints) names it.
//!
//! Being root is not the test: a root process can run with a bounding set
//! that lacks one of these (a container, `capsh --drop`), and then the
//! kernel refuses half-way — the verifier, for one, rejects the program's
//! pointer arithmetic without CAP_PERFMON. The effective set is read.

/// One Linux capability l7c needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Its number (`linux/capability.h`).
    pub number: u32,
    pub name: &'static str,
    /// What l7c does with it.
    pub why: &'static str,
    /// Needed only by the commands that enforce on this node (`run`,
    /// `stop`, `status`), not by the kernel test engine or `probe`.
    pub node_only: bool,
}

/// Every capability, in the order the help text names them.
pub const REQUIRED: &[Capability] = &[
    Capability {
        number: 39,
        name: "CAP_BPF",
        why: "create maps and load programs",
        node_only: false,
    },
    Capability {
        number: 38,
        name: "CAP_PERFMON",
        why: "the verifier accepts the program's pointer arithmetic on message bytes only with it",
        node_only: false,
    },
    Capability {
        number: 12,
        name: "CAP_NET_ADMIN",
        why: "attach programs to a cgroup, end connections (SOCK_DESTROY), set the TCP Fast Open sysctl",
        node_only: false,
    },
    Capability {
        number: 1,
        name: "CAP_DAC_OVERRIDE",
        why: "write the pins under /sys/fs/bpf/l7c and the state under /run/l7c (owned by root)",
        node_only: true,
    },
];

/// Advice printed with every refusal for lack of privilege.
pub const PRIVILEGE_HELP: &str = "run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_DAC_OVERRIDE \
     (for example `sudo l7c ...` or `setcap cap_bpf,cap_perfmon,cap_net_admin,cap_dac_override+ep`)";

/// Who asks: what they need of [`REQUIRED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `l7c run`, `stop`, `status`: everything.
    Node,
    /// The kernel test engine, `compile --verify`, `probe`.
    Engine,
}

/// The capabilities `need` asks for that this process's effective set
/// lacks. Unknown (no /proc) counts as lacking nothing: the kernel's own
/// refusal is then reported as `l7::kernel::not-permitted`.
pub fn missing(need: Need) -> Vec<&'static Capability> {
    effective().map_or_else(Vec::new, |set| lacking(set, need))
}

/// The capabilities `need` asks for that `set` (a CapEff mask) lacks.
pub fn lacking(set: u64, need: Need) -> Vec<&'static Capability> {
    REQUIRED
        .iter()
        .filter(|cap| need == Need::Node || !cap.node_only)
        .filter(|cap| set & (1u64 << cap.number) == 0)
        .collect()
}

/// The refusal for `command` lacking `missing`: which, why, and what to do.
pub fn refusal(command: &str, missing: &[&Capability]) -> String {
    let names = missing
        .iter()
        .map(|cap| format!("{} ({})", cap.name, cap.why))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{command} needs {names}, which this process does not have; {PRIVILEGE_HELP}")
}

/// The effective capability set (`CapEff` of /proc/self/status).
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_every_capability_in_the_list_and_the_setcap_form() {
        for cap in REQUIRED {
            assert!(PRIVILEGE_HELP.contains(cap.name), "{} missing from the help", cap.name);
            assert!(
                PRIVILEGE_HELP.contains(&cap.name.to_lowercase()),
                "{} missing from the setcap example",
                cap.name
            );
        }
    }

    #[test]
    fn the_engine_needs_less_than_the_node_and_a_full_set_lacks_nothing() {
        assert!(lacking(u64::MAX, Need::Node).is_empty());
        let only_bpf_and_net_admin = (1 << 39) | (1 << 12);
        let names = |caps: Vec<&Capability>| caps.iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(lacking(only_bpf_and_net_admin, Need::Engine)), ["CAP_PERFMON"]);
        assert_eq!(
            names(lacking(only_bpf_and_net_admin, Need::Node)),
            ["CAP_PERFMON", "CAP_DAC_OVERRIDE"]
        );
    }

    #[test]
    fn a_refusal_names_what_is_missing_and_why() {
        let text = refusal("`l7c run`", &lacking((1 << 39) | (1 << 12), Need::Node));
        assert!(text.starts_with("`l7c run` needs CAP_PERFMON (the verifier"), "{text}");
        assert!(text.contains("), CAP_DAC_OVERRIDE (write the pins"), "{text}");
        assert!(text.ends_with(PRIVILEGE_HELP), "{text}");
    }
}
