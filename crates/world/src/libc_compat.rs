//! The one symbol of glibc's that Debian's static libseccomp (built against
//! glibc) calls and musl lacks (.cargo/config.toml).

/// glibc's checked `fprintf`, which libseccomp calls only to print a filter
/// as text (`seccomp_export_pfc`), which cloche never does. It prints
/// nothing and fails, as `fprintf` does on an output error.
///
/// # Safety
/// Any arguments: none is read.
#[no_mangle]
pub unsafe extern "C" fn __fprintf_chk(
    _stream: *mut libc::c_void,
    _flag: libc::c_int,
    _format: *const libc::c_char,
) -> libc::c_int {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}
