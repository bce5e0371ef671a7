//! l7c's BPF toolkit, a leaf that knows nothing of policies: [`bpf`] (an
//! assembler with labels, map relocations and subprograms; the encoder,
//! decoder and disassembler of the instruction set) and [`elf`] (the
//! relocatable EM_BPF object aya, bpftool and llvm-objdump read: programs,
//! BTF-defined maps, `.rodata`, the license). The compiler's code
//! generator and the runtime's tests build on it (docs/bpf-assembler.md).

pub mod bpf;
pub mod elf;
