//! The OCI runtime specification's `linux.seccomp` object, as cloche reads
//! it: the fields, the action, architecture, flag and operator names, and
//! their JSON spelling. Written here rather than taken from the `oci-spec`
//! crate, which cloche used for these few types only and which brought
//! four procedural-macro crates into every build (derive_builder, getset,
//! strum and a second darling: about 50 CPU-seconds of a fresh build,
//! docs/architecture.md, *The test command's time*). Unknown keys are
//! refused before these types see the text (`profile::prescan`).

use serde::Deserialize;

/// A string enumeration of the specification: each variant and its name,
/// parsed from and shown as that name.
macro_rules! names {
    ($(#[$doc:meta])* $ty:ident { $($variant:ident = $name:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        pub enum $ty {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl $ty {
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    _ => Err(()),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

names!(
    /// `defaultAction` and a rule's `action`.
    LinuxSeccompAction {
        ScmpActKill = "SCMP_ACT_KILL",
        ScmpActKillProcess = "SCMP_ACT_KILL_PROCESS",
        ScmpActKillThread = "SCMP_ACT_KILL_THREAD",
        ScmpActTrap = "SCMP_ACT_TRAP",
        ScmpActErrno = "SCMP_ACT_ERRNO",
        ScmpActTrace = "SCMP_ACT_TRACE",
        ScmpActAllow = "SCMP_ACT_ALLOW",
        ScmpActLog = "SCMP_ACT_LOG",
        ScmpActNotify = "SCMP_ACT_NOTIFY",
    }
);

names!(
    /// `architectures[]`: the specification's list, and `SCMP_ARCH_NATIVE`.
    Arch {
        ScmpArchNative = "SCMP_ARCH_NATIVE",
        ScmpArchX86 = "SCMP_ARCH_X86",
        ScmpArchX86_64 = "SCMP_ARCH_X86_64",
        ScmpArchX32 = "SCMP_ARCH_X32",
        ScmpArchArm = "SCMP_ARCH_ARM",
        ScmpArchAarch64 = "SCMP_ARCH_AARCH64",
        ScmpArchMips = "SCMP_ARCH_MIPS",
        ScmpArchMips64 = "SCMP_ARCH_MIPS64",
        ScmpArchMips64n32 = "SCMP_ARCH_MIPS64N32",
        ScmpArchMipsel = "SCMP_ARCH_MIPSEL",
        ScmpArchMipsel64 = "SCMP_ARCH_MIPSEL64",
        ScmpArchMipsel64n32 = "SCMP_ARCH_MIPSEL64N32",
        ScmpArchPpc = "SCMP_ARCH_PPC",
        ScmpArchPpc64 = "SCMP_ARCH_PPC64",
        ScmpArchPpc64le = "SCMP_ARCH_PPC64LE",
        ScmpArchS390 = "SCMP_ARCH_S390",
        ScmpArchS390x = "SCMP_ARCH_S390X",
        ScmpArchParisc = "SCMP_ARCH_PARISC",
        ScmpArchParisc64 = "SCMP_ARCH_PARISC64",
        ScmpArchRiscv64 = "SCMP_ARCH_RISCV64",
        ScmpArchLoongarch64 = "SCMP_ARCH_LOONGARCH64",
        ScmpArchM68k = "SCMP_ARCH_M68K",
        ScmpArchSh = "SCMP_ARCH_SH",
        ScmpArchSheb = "SCMP_ARCH_SHEB",
    }
);

names!(
    /// `flags[]`.
    LinuxSeccompFilterFlag {
        SeccompFilterFlagTsync = "SECCOMP_FILTER_FLAG_TSYNC",
        SeccompFilterFlagLog = "SECCOMP_FILTER_FLAG_LOG",
        SeccompFilterFlagSpecAllow = "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        SeccompFilterFlagWaitKillableRecv = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
);

names!(
    /// An argument's `op`.
    LinuxSeccompOperator {
        ScmpCmpNe = "SCMP_CMP_NE",
        ScmpCmpLt = "SCMP_CMP_LT",
        ScmpCmpLe = "SCMP_CMP_LE",
        ScmpCmpEq = "SCMP_CMP_EQ",
        ScmpCmpGe = "SCMP_CMP_GE",
        ScmpCmpGt = "SCMP_CMP_GT",
        ScmpCmpMaskedEq = "SCMP_CMP_MASKED_EQ",
    }
);

/// The `linux.seccomp` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSeccomp {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<Arch>>,
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<LinuxSyscall>>,
}

/// One rule: `names`, `action`, `errnoRet`, `args`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSyscall {
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
}

/// One argument comparison: `index`, `value`, `valueTwo`, `op`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSeccompArg {
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

impl LinuxSeccomp {
    pub fn default_action(&self) -> LinuxSeccompAction {
        self.default_action
    }
    pub fn default_errno_ret(&self) -> Option<u32> {
        self.default_errno_ret
    }
    pub fn architectures(&self) -> &Option<Vec<Arch>> {
        &self.architectures
    }
    pub fn flags(&self) -> &Option<Vec<LinuxSeccompFilterFlag>> {
        &self.flags
    }
    pub fn listener_path(&self) -> Option<&str> {
        self.listener_path.as_deref()
    }
    pub fn listener_metadata(&self) -> Option<&str> {
        self.listener_metadata.as_deref()
    }
    pub fn syscalls(&self) -> &Option<Vec<LinuxSyscall>> {
        &self.syscalls
    }
}

impl LinuxSyscall {
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn action(&self) -> LinuxSeccompAction {
        self.action
    }
    pub fn errno_ret(&self) -> Option<u32> {
        self.errno_ret
    }
    pub fn args(&self) -> &Option<Vec<LinuxSeccompArg>> {
        &self.args
    }
}

impl LinuxSeccompArg {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn value(&self) -> u64 {
        self.value
    }
    pub fn value_two(&self) -> Option<u64> {
        self.value_two
    }
    pub fn op(&self) -> LinuxSeccompOperator {
        self.op
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        assert_eq!("SCMP_ACT_ERRNO".parse::<LinuxSeccompAction>(), Ok(LinuxSeccompAction::ScmpActErrno));
        assert_eq!(LinuxSeccompOperator::ScmpCmpMaskedEq.to_string(), "SCMP_CMP_MASKED_EQ");
        assert_eq!("SCMP_ARCH_X86_64".parse::<Arch>(), Ok(Arch::ScmpArchX86_64));
        assert!("SCMP_ACT_NOPE".parse::<LinuxSeccompAction>().is_err());
        assert!("scmp_arch_x86_64".parse::<Arch>().is_err());
        let s: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                              "args": [{"index": 0, "value": 3, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(s.default_errno_ret(), Some(1));
        let sc = &s.syscalls().as_ref().unwrap()[0];
        assert_eq!((sc.names(), sc.action()), (&["read".to_string()][..], LinuxSeccompAction::ScmpActAllow));
        let a = &sc.args().as_ref().unwrap()[0];
        assert_eq!((a.index(), a.value(), a.value_two(), a.op()), (0, 3, Some(0), LinuxSeccompOperator::ScmpCmpEq));
    }
}
