//! Unit tests of the policy file: loading, validation, the built-in policy.

use super::*;

#[test]
fn builtin_commands_are_the_last_section_and_match_a_full_load() {
    let at = DEFAULT_POLICY.find(COMMANDS_HEADER).expect("[commands] in the default policy");
    let tables = DEFAULT_POLICY[at + 1..].lines().filter(|l| l.starts_with('['));
    for t in tables {
        assert!(t == "[commands]" || t == "[[commands.rule]]", "{t}: [commands] must be the last section");
    }
    let lazy = Policy::builtin();
    let full = Policy::from_toml(DEFAULT_POLICY, "builtin", None).unwrap();
    let names = |p: &Policy| p.commands.rules().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&lazy), names(&full));
    assert!(names(&lazy).len() > 50);
    assert_eq!(lazy.classify("rm -rf /").rule, "rm-root");
}

#[test]
fn builtin_policy_is_valid() {
    let p = Policy::builtin();
    assert_eq!(p.world.upper_size, 16 << 30);
    assert_eq!(p.world.upper, UpperStore::Disk);
    assert!(p.fs.mask.iter().any(|m| m == Path::new("/etc/shadow")));
    assert!(p.layers.requires("seccomp"));
    assert_eq!((p.batch.max_entries, p.batch.output_cap, p.batch.approval_ttl), (10, 1 << 20, 300));
    assert!(p.seccomp_json.contains("syscalls"));
}

#[test]
fn the_user_namespace_is_on_by_default_and_its_ids_are_checked() {
    let p = Policy::builtin();
    assert!(p.world.userns);
    assert_eq!(p.world.userns_ids, None);
    // A policy written before the key: on.
    let old = DEFAULT_POLICY.replace("\nuserns = true\n", "\n");
    assert!(Policy::from_toml(&old, "t", None).unwrap().world.userns);
    let off = DEFAULT_POLICY.replace("\nuserns = true\n", "\nuserns = false\n");
    assert!(!Policy::from_toml(&off, "t", None).unwrap().world.userns);
    let ids = DEFAULT_POLICY.replace("# userns_ids = \"1879048192:67108864\"", "userns_ids = \"200000:131072\"");
    assert_eq!(Policy::from_toml(&ids, "t", None).unwrap().world.userns_ids, Some((200000, 131072)));
    for bad in ["200000", "a:b", "200000:-1"] {
        let text = DEFAULT_POLICY.replace("# userns_ids = \"1879048192:67108864\"", &format!("userns_ids = {bad:?}"));
        let err = Policy::from_toml(&text, "t", None).unwrap_err().to_string();
        assert!(err.contains("world.userns_ids"), "{bad}: {err}");
    }
    let text = DEFAULT_POLICY.replace("\"no_new_privs\", \"cgroup\"]", "\"no_new_privs\", \"cgroup\", \"userns\"]");
    assert!(Policy::from_toml(&text, "t", None).unwrap().layers.requires("userns"));
}

#[test]
fn unknown_key_is_an_error() {
    let text = DEFAULT_POLICY.replace("mask_homes = true", "mask_homes = true\nmask_hmoes = false");
    let err = Policy::from_toml(&text, "t", None).unwrap_err().to_string();
    assert!(err.contains("mask_hmoes") && err.contains("line "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        ("pids = 1024", "pids = 1", "limits.pids"),
        ("memory = \"4GiB\"", "memory = \"lots\"", "limits.memory"),
        ("hostname = \"cloche\"", "hostname = \"a b\"", "world.hostname"),
        ("upper = \"disk\"", "upper = \"ramdisk\"", "world.upper"),
        ("\"/etc/shadow\",", "\"etc/shadow\",", "absolute"),
        ("\".ssh\",", "\"../x\",", "home_secrets"),
        ("\".pyenv\",", "\"/opt/pyenv\",", "fs.toolchains: /opt/pyenv must be relative"),
        ("\".pyenv\",", "[],", "fs.toolchains: an empty list"),
        ("\".pyenv\",", "\".pyenv/../.ssh\",", "fs.toolchains"),
        ("\".pyenv/shims\",", "\"/x\",", "fs.toolchain_writable: /x must be relative"),
        ("\"cgroup\"]", "\"cgroupz\"]", "unknown layer"),
        ("max_entries = 10", "max_entries = 0", "max_entries"),
        ("output_cap = \"1MiB\"", "output_cap = \"huge\"", "batch.output_cap"),
    ];
    for (from, to, want) in cases {
        assert!(DEFAULT_POLICY.contains(from), "{from}");
        let text = DEFAULT_POLICY.replacen(from, to, 1);
        let err = Policy::from_toml(&text, "t", None).unwrap_err().to_string();
        assert!(err.contains(want), "{to}: {err}");
    }
}

#[test]
fn upper_is_disk_unless_tmpfs_is_asked() {
    let tmpfs = DEFAULT_POLICY.replacen("upper = \"disk\"", "upper = \"tmpfs\"", 1);
    assert_eq!(Policy::from_toml(&tmpfs, "t", None).unwrap().world.upper, UpperStore::Tmpfs);
    // A policy written before `upper` existed: disk.
    let old = DEFAULT_POLICY.replacen("upper = \"disk\"\n", "", 1);
    assert_eq!(Policy::from_toml(&old, "t", None).unwrap().world.upper, UpperStore::Disk);
}

#[test]
fn relative_profile_needs_a_base() {
    let text = DEFAULT_POLICY.replace("builtin:default", "seccomp/x.json");
    assert!(Policy::from_toml(&text, "t", None).is_err());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("seccomp")).unwrap();
    std::fs::write(dir.path().join("seccomp/x.json"), "{}").unwrap();
    let p = Policy::from_toml(&text, "t", Some(dir.path())).unwrap();
    assert_eq!(p.seccomp_json, "{}");
}

#[test]
fn builtin_head_json_is_the_toml() {
    // build.rs's JSON of the built-in head and the TOML it came from give
    // the same policy (every field, in its Debug form).
    let split = DEFAULT_POLICY.find(COMMANDS_HEADER).map_or(DEFAULT_POLICY.len(), |i| i + 1);
    let head = &DEFAULT_POLICY[..split];
    let from_toml = Policy::parse(head, "builtin", Seccomp::Beside(None), false).unwrap();
    let raw: RawPolicy = serde_json::from_str(BUILTIN_HEAD_JSON).unwrap();
    let from_json = Policy::from_raw(raw, head, "builtin", Seccomp::Beside(None), false).unwrap();
    assert_eq!(format!("{from_json:?}"), format!("{from_toml:?}"));
    // Not vacuous: the head has its sections.
    assert!(format!("{from_toml:?}").contains("home_secrets") && from_toml.limits.memory > 0);
}
