//! Loading an object written by `l7c_bpf::elf` into the running
//! kernel: its maps are created, its `sk_msg` program is verified and
//! loaded, and the program is attached to a socket map as its
//! `BPF_SK_MSG_VERDICT` program.
//!
//! Invariants: a [`KernelProgram`] owns every kernel object it created
//! (map and program fds, the attachment); dropping it detaches the program
//! and closes the fds, and the kernel frees them once no socket or other
//! program holds them. Sockets put into its maps with
//! [`KernelProgram::insert_socket`] are not owned: closing a socket removes
//! it from the maps.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::maps::{Map, MapData, MapError, RingBuf};
use aya::programs::{Program, ProgramError, SkMsg};
use aya::{Ebpf, EbpfError, EbpfLoader};
use object::{Object, ObjectSection};

use crate::errno::Errno;
use crate::error::KernelError;
use crate::sys;

/// `BPF_MAP_TYPE_*` numbers the runtime looks at.
mod map_type {
    pub const PERCPU_ARRAY: u32 = 6;
    pub const SOCKMAP: u32 = 15;
    pub const SOCKHASH: u32 = 18;
    pub const RINGBUF: u32 = 27;
}

/// Lines of the verifier log kept in [`KernelError::VerifierRejected`]: the
/// refusal is at the end, the lines before it show the path that led there.
const VERIFIER_TAIL_LINES: usize = 24;

/// What to load and where to attach it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions<'a> {
    /// The `sk_msg` program's symbol; `None` takes the object's only
    /// `sk_msg` program.
    pub program: Option<&'a str>,
    /// The socket map (`SOCKHASH` or `SOCKMAP`) the program polices:
    /// sockets inserted there run the program on every send. `None` takes
    /// the object's only `SOCKHASH` whose key is a [`crate::SockKey`]
    /// (44 bytes), or else its only socket map.
    pub attach_map: Option<&'a str>,
}

/// A map of the loaded object, described by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub name: String,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// An `sk_msg` program loaded into the kernel and attached to its socket
/// map, with the object's maps.
pub struct KernelProgram {
    /// The loaded object; `None` for one adopted from pins
    /// ([`KernelProgram::adopt`]), which has only its maps.
    ebpf: Option<Ebpf>,
    /// Maps opened from pins (adopted programs only).
    adopted: HashMap<String, MapData>,
    /// Pinned in bpffs: dropping `self` closes fds but leaves the program
    /// attached and the maps alive (the pins hold them).
    persistent: bool,
    program: String,
    attach_map: String,
    verified_insns: Option<u32>,
    meta: Option<Vec<u8>>,
    shapes: Vec<MapShape>,
    rings: HashMap<String, RingBuf<MapData>>,
    attached: bool,
}

impl std::fmt::Debug for KernelProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelProgram")
            .field("program", &self.program)
            .field("attach_map", &self.attach_map)
            .field("verified_insns", &self.verified_insns)
            .field("maps", &self.shapes)
            .finish_non_exhaustive()
    }
}

impl KernelProgram {
    /// Loads `object` (the bytes of an ELF object from
    /// `l7c_bpf::elf::ObjectBuilder`) and attaches its `sk_msg`
    /// program as `options` say.
    pub fn load(object: &[u8], options: &LoadOptions<'_>) -> Result<KernelProgram, KernelError> {
        KernelProgram::load_with_max_entries(object, options, &[])
    }

    /// [`KernelProgram::load`], with the `max_entries` of the maps named in
    /// `max_entries` set as given instead of as the object says (how
    /// `l7c run --capacity` sizes `l7_sockets`).
    pub fn load_with_max_entries(
        object: &[u8],
        options: &LoadOptions<'_>,
        max_entries: &[(&str, u32)],
    ) -> Result<KernelProgram, KernelError> {
        let meta = read_meta(object)?;
        // aya parses the ELF in place and wants it 4-byte aligned; a
        // caller's slice need not be.
        let aligned = AlignedBytes::copy_of(object);
        let mut loader = EbpfLoader::new();
        for (name, entries) in max_entries {
            loader.map_max_entries(name, *entries);
        }
        let mut ebpf = loader.load(aligned.as_bytes()).map_err(ebpf_error)?;

        let shapes = map_shapes(&ebpf)?;
        let program = choose_program(&ebpf, options.program)?;
        let attach_map = choose_attach_map(&shapes, options.attach_map)?;

        let sk_msg = sk_msg_mut(&mut ebpf, &program)?;
        sk_msg
            .load()
            .map_err(|error| program_load_error(&program, error))?;
        // The processed-instruction count is informational: a kernel that
        // does not report it (before 5.16) gives `None`.
        let verified_insns = sk_msg
            .info()
            .ok()
            .and_then(|info| info.verified_instruction_count());

        let mut loaded = KernelProgram {
            ebpf: Some(ebpf),
            adopted: HashMap::new(),
            persistent: false,
            program,
            attach_map,
            verified_insns,
            meta,
            shapes,
            rings: HashMap::new(),
            attached: false,
        };
        loaded.attach()?;
        Ok(loaded)
    }

    fn attach(&mut self) -> Result<(), KernelError> {
        let map_fd = self.map_fd(&self.attach_map)?;
        let sk_msg = sk_msg_ref(self.loaded()?, &self.program)?;
        let prog_fd = sk_msg.fd().map_err(|e| KernelError::BadObject {
            reason: e.to_string(),
        })?;
        sys::prog_attach(map_fd, prog_fd.as_fd(), sys::BPF_SK_MSG_VERDICT).map_err(|errno| {
            KernelError::syscall(
                format!(
                    "BPF_PROG_ATTACH of `{}` to map `{}` (BPF_SK_MSG_VERDICT)",
                    self.program, self.attach_map
                ),
                errno,
                "the kernel must support sk_msg programs on socket maps (CONFIG_BPF_STREAM_PARSER)",
            )
        })?;
        self.attached = true;
        Ok(())
    }

    /// Loads the receive-side verdict (`l7c_abi::receive`: frames the
    /// server's responses into `l7_peer`, passes every byte) and attaches it to the socket map the `sk_msg` program
    /// is attached to, so sockets enrolled from now on get a receive path
    /// through their psock (what keeps `ioctl(FIONREAD)` true on kernels
    /// with upstream 929e30f93125). The map holds the program from then on,
    /// pinned or not.
    pub fn attach_receive_verdict(&self) -> Result<(), KernelError> {
        use l7c_abi::receive;
        let program = self.load_companion(
            receive::PROGRAM_NAME,
            sys::BPF_PROG_TYPE_SK_SKB,
            sys::BPF_SK_SKB_VERDICT,
            &receive::program(),
        )?;
        sys::prog_attach(self.map_fd(&self.attach_map)?, program.as_fd(), sys::BPF_SK_SKB_VERDICT).map_err(|errno| {
            KernelError::syscall(
                format!(
                    "BPF_PROG_ATTACH of `{}` to map `{}` (BPF_SK_SKB_VERDICT)",
                    receive::PROGRAM_NAME,
                    self.attach_map
                ),
                errno,
                "the kernel must support sk_skb verdicts without a stream parser (Linux 5.13+)",
            )
        })
    }

    /// Loads the object's `sock_ops` program `name` and attaches it to the
    /// cgroup (v2) directory `cgroup`: from then on, every TCP connection
    /// a process in that cgroup establishes runs it (how `l7c run` enrolls
    /// connections). Detached when `self` is dropped.
    pub fn attach_sock_ops(
        &mut self,
        name: &str,
        cgroup: &std::path::Path,
    ) -> Result<(), KernelError> {
        let cgroup_dir = crate::cgroup::open_cgroup(cgroup)?;
        let sock_ops = self.sock_ops_mut(name)?;
        sock_ops
            .load()
            .map_err(|error| program_load_error(name, error))?;
        sock_ops.attach(cgroup_dir, aya::programs::CgroupAttachMode::Single).map_err(|error| match error {
            ProgramError::SyscallError(error) => KernelError::syscall(
                format!("{} of sock_ops `{name}` to cgroup `{}`", error.call, cgroup.display()),
                Errno::from_io(&error.io_error),
                "the cgroup must be on a cgroup2 mount; one sock_ops program per cgroup unless multi-attach is used",
            ),
            other => KernelError::BadObject { reason: format!("sock_ops `{name}`: {}", error_chain(&other)) },
        })?;
        Ok(())
    }

    /// The verifier's processed-instruction count for the program (what
    /// `l7c compile --verify` reports); `None` if the kernel does not say.
    pub fn verified_instruction_count(&self) -> Option<u32> {
        self.verified_insns
    }

    /// The program's symbol name.
    pub fn program_name(&self) -> &str {
        &self.program
    }

    /// The socket map the program is attached to.
    pub fn attach_map(&self) -> &str {
        &self.attach_map
    }

    /// The contents of the object's `.l7.meta` section, if it has one.
    pub fn meta(&self) -> Option<&[u8]> {
        self.meta.as_deref()
    }

    /// The object's maps as the kernel created them.
    pub fn maps(&self) -> &[MapShape] {
        &self.shapes
    }

    /// Kernel memory its maps hold, as the kernel accounts it (`memlock:`
    /// of each map fd's `/proc/self/fdinfo` entry); 0 for a map whose
    /// entry cannot be read.
    pub fn memlock_bytes(&self) -> u64 {
        self.shapes
            .iter()
            .filter_map(|shape| self.map_fd(&shape.name).ok())
            .filter_map(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok())
            .filter_map(|info| {
                let line = info.lines().find(|line| line.starts_with("memlock:"))?;
                line.trim_start_matches("memlock:").trim().parse::<u64>().ok()
            })
            .sum()
    }

    /// The kernel's id of the loaded program (what `bpftool prog list`
    /// shows).
    pub fn program_id(&self) -> Option<u32> {
        let sk_msg = sk_msg_ref(self.ebpf.as_ref()?, &self.program).ok()?;
        sk_msg.info().ok().map(|info| info.id())
    }

    /// The kernel's ids of the object's maps, by name.
    pub fn map_ids(&self) -> Vec<(String, u32)> {
        let mut ids: Vec<(String, u32)> = match &self.ebpf {
            Some(ebpf) => ebpf
                .maps()
                .filter_map(|(name, map)| Some((name.to_owned(), map_data(map)?.info().ok()?.id())))
                .collect(),
            None => self
                .adopted
                .iter()
                .filter_map(|(name, data)| Some((name.clone(), data.info().ok()?.id())))
                .collect(),
        };
        ids.sort();
        ids
    }

    /// The loaded object, or an error for a program adopted from pins.
    fn loaded(&self) -> Result<&Ebpf, KernelError> {
        self.ebpf.as_ref().ok_or_else(|| KernelError::BadObject {
            reason: "this policy generation was adopted from its pins: it has maps, not the object".to_owned(),
        })
    }

    /// The fd of map `name`.
    fn map_fd(&self, name: &str) -> Result<BorrowedFd<'_>, KernelError> {
        match &self.ebpf {
            Some(ebpf) => map_fd(ebpf, name),
            None => self.adopted.get(name).map(|data| data.fd().as_fd()).ok_or_else(|| KernelError::NoMap {
                name: name.to_owned(),
                available: self.adopted.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Pins every map in `dir` (a directory on a bpffs mount, created if
    /// missing), each under its name: from then on the maps, and the
    /// `sk_msg` program attached to the socket map, outlive this process
    /// (`l7c run`'s crash safety, docs/runtime.md). Dropping `self` no
    /// longer detaches anything.
    pub fn pin(&mut self, dir: &std::path::Path) -> Result<(), KernelError> {
        std::fs::create_dir_all(dir).map_err(|error| KernelError::syscall(
            format!("mkdir {} (bpffs)", dir.display()),
            Errno::from_io(&error),
            "bpffs must be mounted at /sys/fs/bpf: `mount -t bpf bpf /sys/fs/bpf`",
        ))?;
        for shape in &self.shapes {
            let path = dir.join(pin_name(&shape.name));
            sys::obj_pin(self.map_fd(&shape.name)?, &path).map_err(|errno| {
                KernelError::syscall(format!("BPF_OBJ_PIN of map `{}` at {}", shape.name, path.display()), errno, "bpffs must be mounted at /sys/fs/bpf and the path free")
            })?;
        }
        self.persistent = true;
        Ok(())
    }

    /// A program's maps opened from the pins [`KernelProgram::pin`] left
    /// in `dir`, by name (what a restarted `l7c run` adopts). Nothing is
    /// loaded or attached: the `sk_msg` program is still attached to the
    /// pinned socket map `attach_map`. Persistent until
    /// [`KernelProgram::release`].
    pub fn adopt(dir: &std::path::Path, attach_map: &str) -> Result<KernelProgram, KernelError> {
        let entries = std::fs::read_dir(dir).map_err(|error| KernelError::syscall(
            format!("reading {}", dir.display()),
            Errno::from_io(&error),
            "the pins of a running policy are under /sys/fs/bpf/l7c",
        ))?;
        let mut adopted = HashMap::new();
        let mut shapes = Vec::new();
        for entry in entries.flatten() {
            let name = map_name_of_pin(&entry.file_name().to_string_lossy());
            let fd = sys::obj_get(&entry.path()).map_err(|errno| {
                KernelError::syscall(format!("BPF_OBJ_GET of {}", entry.path().display()), errno, "")
            })?;
            let data = MapData::from_fd(fd).map_err(|error| map_error(&name, "BPF_OBJ_GET_INFO_BY_FD", error))?;
            let info = data.info().map_err(|error| map_error(&name, "BPF_OBJ_GET_INFO_BY_FD", error))?;
            shapes.push(MapShape {
                name: name.clone(),
                map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            });
            adopted.insert(name, data);
        }
        shapes.sort_by(|a, b| a.name.cmp(&b.name));
        if !adopted.contains_key(attach_map) {
            return Err(KernelError::NoMap {
                name: attach_map.to_owned(),
                available: adopted.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(KernelProgram {
            ebpf: None,
            adopted,
            persistent: true,
            program: String::new(),
            attach_map: attach_map.to_owned(),
            verified_insns: None,
            meta: None,
            shapes,
            rings: HashMap::new(),
            attached: false,
        })
    }

    /// Makes a pinned program ordinary again: once its pins are removed,
    /// dropping it frees its maps (and so detaches its `sk_msg` program).
    pub fn release(&mut self) {
        self.persistent = false;
    }

    pub(crate) fn shape(&self, name: &str) -> Result<&MapShape, KernelError> {
        self.shapes
            .iter()
            .find(|shape| shape.name == name)
            .ok_or_else(|| KernelError::NoMap {
                name: name.to_owned(),
                available: self
                    .shapes
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Puts the socket `socket` into the socket map `map` under `key`
    /// (`BPF_MAP_UPDATE_ELEM`, `BPF_ANY`). The key must have the map's key
    /// size; a `SOCKMAP` takes a 4-byte index.
    pub fn insert_socket(
        &self,
        map: &str,
        key: &[u8],
        socket: BorrowedFd<'_>,
    ) -> Result<(), KernelError> {
        let shape = self.shape(map)?;
        if shape.map_type != map_type::SOCKHASH && shape.map_type != map_type::SOCKMAP {
            return Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "to hold sockets".to_owned(),
                problem: format!("its type is {}, not SOCKHASH or SOCKMAP", shape.map_type),
            });
        }
        if key.len() != shape.key_size as usize {
            return Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "with this key".to_owned(),
                problem: format!(
                    "the key has {} bytes, the map's keys have {}",
                    key.len(),
                    shape.key_size
                ),
            });
        }
        // Socket maps take the fd as a u32 (or u64) value.
        let fd = u64::try_from(socket.as_raw_fd()).unwrap_or(u64::MAX);
        let value = fd.to_ne_bytes();
        let value =
            value
                .get(..shape.value_size as usize)
                .ok_or_else(|| KernelError::MapShape {
                    name: map.to_owned(),
                    purpose: "to hold sockets".to_owned(),
                    problem: format!("its values have {} bytes, not 4 or 8", shape.value_size),
                })?;
        sys::map_update(self.map_fd(map)?, key, value, sys::BPF_ANY).map_err(|errno| {
            KernelError::syscall(
                format!("BPF_MAP_UPDATE_ELEM of a socket into map `{map}`"),
                errno,
                "a socket map takes established TCP sockets (EOPNOTSUPP: the socket is not established or is in kTLS)",
            )
        })
    }

    /// Writes `value` at `index` of an `ARRAY` (or any map with 4-byte
    /// keys), e.g. tables the program reads.
    pub fn write_array(&self, map: &str, index: u32, value: &[u8]) -> Result<(), KernelError> {
        let shape = self.shape(map)?;
        if shape.key_size != 4 || value.len() != shape.value_size as usize {
            return Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "as an array".to_owned(),
                problem: format!(
                    "keys have {} bytes and values {} (given a 4-byte index and {} bytes)",
                    shape.key_size,
                    shape.value_size,
                    value.len()
                ),
            });
        }
        sys::map_update(
            self.map_fd(map)?,
            &index.to_ne_bytes(),
            value,
            sys::BPF_ANY,
        )
        .map_err(|errno| {
            KernelError::syscall(
                format!("BPF_MAP_UPDATE_ELEM of index {index} in map `{map}`"),
                errno,
                "the index must be below the map's max_entries",
            )
        })
    }

    /// Writes `value` under `key` in map `map` (`BPF_MAP_UPDATE_ELEM`,
    /// `BPF_ANY`: created or replaced), e.g. a record of a `HASH` map;
    /// both must have the map's sizes.
    pub fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), KernelError> {
        let shape = self.shape(map)?;
        if key.len() != shape.key_size as usize || value.len() != shape.value_size as usize {
            return Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "with this element".to_owned(),
                problem: format!(
                    "keys have {} bytes and values {} (given {} and {})",
                    shape.key_size,
                    shape.value_size,
                    key.len(),
                    value.len()
                ),
            });
        }
        sys::map_update(self.map_fd(map)?, key, value, sys::BPF_ANY).map_err(|errno| {
            KernelError::syscall(
                format!("BPF_MAP_UPDATE_ELEM in map `{map}`"),
                errno,
                "a hash map refuses a new element when it is full (E2BIG)",
            )
        })
    }

    /// Reads the value at `key` of map `map` (not a per-CPU map: see
    /// [`KernelProgram::counters`]); `None` if there is no such element.
    pub fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KernelError> {
        let shape = self.shape(map)?;
        let mut value = vec![0u8; shape.value_size as usize];
        match sys::map_lookup(self.map_fd(map)?, key, &mut value) {
            Ok(()) => Ok(Some(value)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(KernelError::syscall(
                format!("BPF_MAP_LOOKUP_ELEM in map `{map}`"),
                errno,
                "the key must have the map's key size",
            )),
        }
    }

    /// The counters of a `PERCPU_ARRAY` map of `u64` (or `u32`) values:
    /// for each index, the sum over all possible CPUs.
    pub fn counters(&self, map: &str) -> Result<Vec<u64>, KernelError> {
        let shape = self.shape(map)?.clone();
        if shape.map_type != map_type::PERCPU_ARRAY || !matches!(shape.value_size, 4 | 8) {
            return Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "as counters".to_owned(),
                problem: format!(
                    "counters are a PERCPU_ARRAY of u64 or u32 values; this map has type {} and {}-byte values",
                    shape.map_type, shape.value_size
                ),
            });
        }
        let cpus = aya::util::nr_cpus().map_err(|(path, error)| KernelError::Syscall {
            step: format!("reading {path}"),
            errno: Errno::from_io(&error),
            help: "the runtime needs /sys to count the possible CPUs".to_owned(),
        })?;
        // The kernel copies one value per possible CPU, each padded to 8.
        let stride = 8usize;
        let fd = self.map_fd(map)?;
        let mut buffer = vec![0u8; stride * cpus];
        let mut sums = Vec::with_capacity(shape.max_entries as usize);
        for index in 0..shape.max_entries {
            sys::map_lookup(fd, &index.to_ne_bytes(), &mut buffer).map_err(|errno| {
                KernelError::syscall(
                    format!("BPF_MAP_LOOKUP_ELEM of index {index} in map `{map}`"),
                    errno,
                    "",
                )
            })?;
            let sum = buffer
                .chunks_exact(stride)
                .map(|cpu| {
                    let mut word = [0u8; 8];
                    // `cpu` has 8 bytes (chunks_exact); a u32 value fills
                    // the first 4 and the kernel zeroes the padding.
                    word.copy_from_slice(cpu);
                    u64::from_ne_bytes(word)
                })
                .fold(0u64, u64::wrapping_add);
            sums.push(sum);
        }
        Ok(sums)
    }

    /// Takes every record the program wrote to the `RINGBUF` map `map`
    /// since the last call, oldest first, as raw bytes.
    pub fn drain_events(&mut self, map: &str) -> Result<Vec<Vec<u8>>, KernelError> {
        if !self.rings.contains_key(map) {
            let shape = self.shape(map)?;
            if shape.map_type != map_type::RINGBUF {
                return Err(KernelError::MapShape {
                    name: map.to_owned(),
                    purpose: "for events".to_owned(),
                    problem: format!("its type is {}, not RINGBUF", shape.map_type),
                });
            }
            let taken = match self.ebpf.as_mut() {
                Some(ebpf) => ebpf.take_map(map),
                None => self.adopted.remove(map).map(Map::RingBuf),
            }
            .ok_or_else(|| KernelError::NoMap {
                name: map.to_owned(),
                available: String::new(),
            })?;
            let ring = RingBuf::try_from(taken)
                .map_err(|error| map_error(map, "mmap of the ring buffer", error))?;
            self.rings.insert(map.to_owned(), ring);
        }
        let mut records = Vec::new();
        if let Some(ring) = self.rings.get_mut(map) {
            while let Some(item) = ring.next() {
                records.push(item.to_vec());
            }
        }
        Ok(records)
    }

    /// Deletes the element at `key` of `map` (`BPF_MAP_DELETE_ELEM`);
    /// `false` if there was none.
    pub fn delete(&self, map: &str, key: &[u8]) -> Result<bool, KernelError> {
        match sys::map_delete(self.map_fd(map)?, key) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(KernelError::syscall(
                format!("BPF_MAP_DELETE_ELEM in map `{map}`"),
                errno,
                "the key must have the map's key size",
            )),
        }
    }

    /// Whether `map` is a socket map and how it is keyed.
    pub(crate) fn socket_map_kind(&self, map: &str) -> Result<SocketMapKind, KernelError> {
        let shape = self.shape(map)?;
        match shape.map_type {
            map_type::SOCKMAP => Ok(SocketMapKind::Array),
            map_type::SOCKHASH => Ok(SocketMapKind::Hash {
                key_size: shape.key_size,
            }),
            other => Err(KernelError::MapShape {
                name: map.to_owned(),
                purpose: "as a socket map".to_owned(),
                problem: format!("its type is {other}, not SOCKHASH (18) or SOCKMAP (15)"),
            }),
        }
    }
}

/// What `l7c run` needs beyond the engine: the object's `sock_ops`
/// program, a companion program loaded against this object's maps, and
/// the keys of a map.
impl KernelProgram {
    /// The object's `sock_ops` program `name`.
    fn sock_ops_mut(&mut self, name: &str) -> Result<&mut aya::programs::SockOps, KernelError> {
        self.loaded()?;
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Err(KernelError::BadObject { reason: "adopted from pins".to_owned() });
        };
        let available = ebpf
            .programs()
            .filter(|(_, program)| matches!(program, Program::SockOps(_)))
            .map(|(name, _)| name.to_owned())
            .collect::<Vec<_>>()
            .join(", ");
        match ebpf.program_mut(name) {
            Some(Program::SockOps(sock_ops)) => Ok(sock_ops),
            _ => Err(KernelError::NoProgram {
                name: name.to_owned(),
                available,
            }),
        }
    }

    /// Whether the object has a program (of any type) under symbol `name`.
    pub fn has_program(&self, name: &str) -> bool {
        self.ebpf.as_ref().is_some_and(|ebpf| ebpf.program(name).is_some())
    }

    /// Loads the object's `sock_ops` program `name` (once; later calls
    /// return the same program) without attaching it, and returns its fd:
    /// the caller attaches it, e.g. with a cgroup link it can update.
    pub fn load_sock_ops(&mut self, name: &str) -> Result<BorrowedFd<'_>, KernelError> {
        let sock_ops = self.sock_ops_mut(name)?;
        if sock_ops.fd().is_err() {
            sock_ops
                .load()
                .map_err(|error| program_load_error(name, error))?;
        }
        let fd = sock_ops.fd().map_err(|error| KernelError::BadObject {
            reason: format!("sock_ops `{name}`: {}", error_chain(&error)),
        })?;
        Ok(fd.as_fd())
    }

    /// Loads `program` (not part of the object) as a program of type
    /// `prog_type` (and `expected_attach_type`, 0 where the type has
    /// none), its map loads resolved to this object's maps by name: how
    /// the runtime adds the enrollment gate and the receive verdict to an
    /// object. A program with functions (`bpf_loop` callbacks) is loaded
    /// with their BTF and func_info. The caller owns the returned fd.
    pub fn load_companion(
        &self,
        name: &str,
        prog_type: u32,
        expected_attach_type: u32,
        program: &l7c_bpf::bpf::Program,
    ) -> Result<std::os::fd::OwnedFd, KernelError> {
        let mut code = program.encode();
        for relocation in program.relocations() {
            let fd = self.map_fd(&relocation.map)?;
            let at = relocation.slot * l7c_bpf::bpf::SLOT_BYTES;
            // An LD_IMM64's first slot: byte 1 holds dst (low nibble) and
            // src (high nibble), bytes 4..8 the immediate. The relocation
            // slots come from the assembler, inside the encoded program.
            let (Some(regs), Some(imm)) = (code.get(at + 1).copied(), code.get_mut(at + 4..at + 8))
            else {
                return Err(KernelError::BadObject {
                    reason: format!("`{name}`: a map load outside the program"),
                });
            };
            imm.copy_from_slice(&fd.as_raw_fd().to_le_bytes());
            if let Some(byte) = code.get_mut(at + 1) {
                *byte = (regs & 0x0f) | (l7c_bpf::bpf::BPF_PSEUDO_MAP_FD << 4);
            }
        }
        let loaded = if program.functions().is_empty() {
            sys::prog_load(prog_type, expected_attach_type, name, &code)
        } else {
            // Subprograms (`bpf_loop` callbacks) need their BTF types and
            // func_info, as an object's `.BTF.ext` gives them to aya.
            let (btf, func_info) = function_types(name, program);
            let btf = sys::btf_load(&btf).map_err(|(errno, log)| {
                KernelError::syscall(
                    format!("BPF_BTF_LOAD of the function types of `{name}` (the kernel's log: {})", log_tail(&log).trim()),
                    errno,
                    "the kernel must support BTF (CONFIG_DEBUG_INFO_BTF is not needed, BPF_BTF_LOAD is: Linux 4.18+)",
                )
            })?;
            sys::prog_load_with_functions(prog_type, expected_attach_type, name, &code, btf.as_fd(), &func_info)
        };
        loaded.map_err(|(errno, log)| {
            if errno == Errno::EPERM && log.trim().is_empty() {
                KernelError::NotPermitted {
                    step: format!("BPF_PROG_LOAD of `{name}`"),
                    errno,
                }
            } else {
                KernelError::VerifierRejected {
                    program: name.to_owned(),
                    errno,
                    log_tail: log_tail(&log),
                }
            }
        })
    }

    /// Every key of map `map` (`BPF_MAP_GET_NEXT_KEY`), e.g. the enrolled
    /// connections of `l7_sockets`. Keys removed while iterating may be
    /// missed, keys added may or may not be listed.
    pub fn keys(&self, map: &str) -> Result<Vec<Vec<u8>>, KernelError> {
        let key_size = self.shape(map)?.key_size as usize;
        let fd = self.map_fd(map)?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; key_size];
            match sys::map_next_key(fd, keys.last().map(Vec::as_slice), &mut next) {
                Ok(()) => keys.push(next),
                Err(Errno::ENOENT) => return Ok(keys),
                Err(errno) => {
                    return Err(KernelError::syscall(
                        format!("BPF_MAP_GET_NEXT_KEY in map `{map}`"),
                        errno,
                        "",
                    ))
                }
            }
            // A hash map whose element was deleted under us restarts from
            // the first key; never loop past its capacity.
            if keys.len() > self.shape(map)?.max_entries as usize {
                return Ok(keys);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketMapKind {
    Array,
    Hash { key_size: u32 },
}

impl Drop for KernelProgram {
    fn drop(&mut self) {
        if self.attached && !self.persistent {
            // Best effort: closing the map's last fd releases its programs
            // anyway (`map_release_uref`), so a failed detach leaks nothing.
            if let (Ok(map), Some(Ok(sk_msg))) = (
                self.map_fd(&self.attach_map),
                self.ebpf.as_ref().map(|ebpf| sk_msg_ref(ebpf, &self.program)),
            ) {
                if let Ok(prog) = sk_msg.fd() {
                    let _detached = sys::prog_detach(map, prog.as_fd(), sys::BPF_SK_MSG_VERDICT);
                }
            }
        }
        // `rings` and `ebpf` drop next, closing every map and program fd.
    }
}

/// The BTF a program with subprograms is loaded with: a `FUNC` per
/// function (main first, global; the callbacks static, as
/// `l7c_bpf::elf` declares them in objects) and the func_info records
/// `[instruction offset, FUNC id]` the kernel wants for each.
fn function_types(name: &str, program: &l7c_bpf::bpf::Program) -> (Vec<u8>, Vec<[u32; 2]>) {
    let mut btf = l7c_bpf::elf::btf::BtfBuilder::new();
    let slots = program.slot_of_each();
    let mut func_info = vec![[0, btf.function(name, true)]];
    for function in program.functions() {
        // A function starts at one of the program's instructions; programs
        // are far below 4G slots.
        let slot = slots.get(function.insn).copied().unwrap_or(0) as u32;
        func_info.push([slot, btf.function(function.name.as_str(), false)]);
    }
    (btf.finish(), func_info)
}

/// The file name a map is pinned under: bpffs refuses names with a dot
/// (`EPERM`), which section-named maps such as `.rodata` have; our map
/// names never contain `-`.
fn pin_name(map: &str) -> String {
    map.replace('.', "-")
}

fn map_name_of_pin(pin: &str) -> String {
    pin.replace('-', ".")
}

/// A copy of the object in 8-byte-aligned memory.
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn copy_of(bytes: &[u8]) -> AlignedBytes {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut buf = [0u8; 8];
            // `chunk` has at most 8 bytes.
            if let Some(head) = buf.get_mut(..chunk.len()) {
                head.copy_from_slice(chunk);
            }
            *word = u64::from_ne_bytes(buf);
        }
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `words` owns `8 * words.len() >= len` initialised bytes;
        // u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

fn read_meta(object: &[u8]) -> Result<Option<Vec<u8>>, KernelError> {
    let aligned = AlignedBytes::copy_of(object);
    let file = object::File::parse(aligned.as_bytes()).map_err(|error| KernelError::BadObject {
        reason: format!("not an ELF object: {error}"),
    })?;
    let Some(section) = file.section_by_name(l7c_bpf::elf::META_SECTION) else {
        return Ok(None);
    };
    let data = section.data().map_err(|error| KernelError::BadObject {
        reason: format!("unreadable `.l7.meta` section: {error}"),
    })?;
    Ok(Some(data.to_vec()))
}

/// The `MapData` inside any `Map` (aya 0.14 has no accessor for it).
pub(crate) fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn map_fd<'a>(ebpf: &'a Ebpf, name: &str) -> Result<BorrowedFd<'a>, KernelError> {
    let map = ebpf.map(name).ok_or_else(|| KernelError::NoMap {
        name: name.to_owned(),
        available: ebpf.maps().map(|(n, _)| n).collect::<Vec<_>>().join(", "),
    })?;
    let data = map_data(map).ok_or_else(|| KernelError::MapShape {
        name: name.to_owned(),
        purpose: "by this runtime".to_owned(),
        problem: "aya does not expose this map type".to_owned(),
    })?;
    Ok(data.fd().as_fd())
}

fn map_shapes(ebpf: &Ebpf) -> Result<Vec<MapShape>, KernelError> {
    let mut shapes = Vec::new();
    for (name, map) in ebpf.maps() {
        let Some(data) = map_data(map) else { continue };
        let info = data
            .info()
            .map_err(|error| map_error(name, "BPF_OBJ_GET_INFO_BY_FD", error))?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        shapes.push(MapShape {
            name: name.to_owned(),
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        });
    }
    shapes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(shapes)
}

fn choose_program(ebpf: &Ebpf, wanted: Option<&str>) -> Result<String, KernelError> {
    let sk_msgs: Vec<&str> = ebpf
        .programs()
        .filter(|(_, program)| matches!(program, Program::SkMsg(_)))
        .map(|(name, _)| name)
        .collect();
    let available = || {
        if sk_msgs.is_empty() {
            "no sk_msg program".to_owned()
        } else {
            sk_msgs.join(", ")
        }
    };
    match wanted {
        Some(name) if sk_msgs.contains(&name) => Ok(name.to_owned()),
        Some(name) => Err(KernelError::NoProgram {
            name: name.to_owned(),
            available: available(),
        }),
        None => match sk_msgs.as_slice() {
            [only] => Ok((*only).to_owned()),
            _ => Err(KernelError::NoProgram {
                name: "(the only one)".to_owned(),
                available: available(),
            }),
        },
    }
}

fn choose_attach_map(shapes: &[MapShape], wanted: Option<&str>) -> Result<String, KernelError> {
    let socket_maps: Vec<&MapShape> = shapes
        .iter()
        .filter(|s| s.map_type == map_type::SOCKHASH || s.map_type == map_type::SOCKMAP)
        .collect();
    let available = || {
        socket_maps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = wanted {
        return match socket_maps.iter().find(|s| s.name == name) {
            Some(shape) => Ok(shape.name.clone()),
            None if shapes.iter().any(|s| s.name == name) => Err(KernelError::MapShape {
                name: name.to_owned(),
                purpose: "to attach an sk_msg program".to_owned(),
                problem: "it is not a SOCKHASH or SOCKMAP".to_owned(),
            }),
            None => Err(KernelError::NoMap {
                name: name.to_owned(),
                available: available(),
            }),
        };
    }
    let keyed: Vec<&MapShape> = socket_maps
        .iter()
        .copied()
        .filter(|s| {
            s.map_type == map_type::SOCKHASH && s.key_size as usize == crate::key::SOCK_KEY_SIZE
        })
        .collect();
    match (keyed.as_slice(), socket_maps.as_slice()) {
        ([only], _) | ([], [only]) => Ok(only.name.clone()),
        _ => Err(KernelError::NoMap {
            name: "(the socket map to attach to)".to_owned(),
            available: available(),
        }),
    }
}

fn sk_msg_ref<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SkMsg, KernelError> {
    match ebpf.program(name) {
        Some(Program::SkMsg(program)) => Ok(program),
        _ => Err(KernelError::NoProgram {
            name: name.to_owned(),
            available: String::new(),
        }),
    }
}

fn sk_msg_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SkMsg, KernelError> {
    match ebpf.program_mut(name) {
        Some(Program::SkMsg(program)) => Ok(program),
        _ => Err(KernelError::NoProgram {
            name: name.to_owned(),
            available: String::new(),
        }),
    }
}

fn program_load_error(program: &str, error: ProgramError) -> KernelError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let errno = Errno::from_io(&io_error);
            let log = verifier_log.to_string();
            if errno == Errno::EPERM && log.trim().is_empty() {
                return KernelError::NotPermitted {
                    step: format!("BPF_PROG_LOAD of `{program}`"),
                    errno,
                };
            }
            KernelError::VerifierRejected {
                program: program.to_owned(),
                errno,
                log_tail: log_tail(&log),
            }
        }
        ProgramError::SyscallError(error) => KernelError::syscall(
            format!("{} for program `{program}`", error.call),
            Errno::from_io(&error.io_error),
            "",
        ),
        other => KernelError::BadObject {
            reason: format!("program `{program}`: {}", error_chain(&other)),
        },
    }
}

/// The last lines of a verifier log, without trailing blank lines.
pub(crate) fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(VERIFIER_TAIL_LINES);
    lines.get(start..).unwrap_or_default().join("\n")
}

fn map_error(map: &str, step: &str, error: MapError) -> KernelError {
    match error {
        MapError::CreateError { name, io_error } => {
            let errno = Errno::from_io(&io_error);
            if errno == Errno::EPERM {
                return KernelError::NotPermitted {
                    step: format!("BPF_MAP_CREATE of map `{name}`"),
                    errno,
                };
            }
            let help = match errno {
                Errno::EINVAL | Errno::EOPNOTSUPP => {
                    "this kernel may lack the map type (SOCKHASH and SOCKMAP need CONFIG_BPF_STREAM_PARSER; RINGBUF 5.8; SK_STORAGE 5.2)"
                }
                Errno::ENOMEM => "the kernel could not allocate the map: lower its max_entries",
                _ => "check `l7c probe` for what this kernel offers",
            };
            KernelError::MapCreate {
                map: name,
                errno,
                help: help.to_owned(),
            }
        }
        MapError::SyscallError(error) => KernelError::syscall(
            format!("{} on map `{map}`", error.call),
            Errno::from_io(&error.io_error),
            "",
        ),
        MapError::IoError(error) => {
            KernelError::syscall(format!("{step} on map `{map}`"), Errno::from_io(&error), "")
        }
        other => KernelError::BadObject {
            reason: format!("map `{map}`: {}", error_chain(&other)),
        },
    }
}

fn ebpf_error(error: EbpfError) -> KernelError {
    match error {
        EbpfError::MapError(error) => map_error("?", "creating maps", error),
        EbpfError::BtfError(aya::BtfError::LoadError {
            io_error,
            verifier_log,
        }) => {
            let errno = Errno::from_io(&io_error);
            if errno == Errno::EPERM {
                return KernelError::NotPermitted {
                    step: "BPF_BTF_LOAD of the object's BTF".to_owned(),
                    errno,
                };
            }
            KernelError::BadObject {
                reason: format!(
                    "BPF_BTF_LOAD failed with {errno}: {}",
                    log_tail(&verifier_log.to_string())
                ),
            }
        }
        EbpfError::ProgramError(error) => program_load_error("?", error),
        other => KernelError::BadObject {
            reason: error_chain(&other),
        },
    }
}

/// An error and its sources, `: `-joined.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
