//! The seccomp programs a namespace sandbox runs under, compiled with `seccompiler` into the
//! raw BPF bubblewrap loads (`--add-seccomp-fd`).
//!
//! The first refuses (EPERM) what Docker's default profile refuses to a container without
//! capabilities: mounting, namespaces, tracing, kernel modules and keyrings, BPF, clocks,
//! reboot, and `clone` with a namespace flag. The second answers `clone3` with ENOSYS: its
//! flags sit in memory a filter cannot read, and ENOSYS makes the C library fall back to
//! `clone`, which the first program checks.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls no sandboxed step needs.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    libc::SYS_fanotify_init,
    libc::SYS_iopl,
    libc::SYS_ioperm,
];

/// `clone` flags that make a namespace.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// The two programs, as raw BPF (native byte order), in the order bubblewrap loads them.
pub(super) fn programs() -> Result<[Vec<u8>; 2], String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this CPU architecture: {e:?}"))?;

    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|call| (*call, Vec::new())).collect();
    let namespace_clones = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = u64::from(flag.unsigned_abs());
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    denied.insert(libc::SYS_clone, namespace_clones);
    let refuse = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;

    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
    .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;

    Ok([raw(refuse)?, raw(clone3)?])
}

fn raw(filter: SeccompFilter) -> Result<Vec<u8>, String> {
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| format!("cannot compile the seccomp filter: {e}"))?;
    // `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }`, as the kernel reads it.
    Ok(program
        .iter()
        .flat_map(|insn| {
            let mut bytes = Vec::with_capacity(8);
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
            bytes
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn both_programs_compile_to_whole_instructions() {
        let [refuse, clone3] = programs().unwrap();
        assert!(!refuse.is_empty() && refuse.len() % 8 == 0);
        assert!(!clone3.is_empty() && clone3.len() % 8 == 0);
    }
}
