//! Full RELRO for cloche's static executables.
//!
//! A position-independent executable is relocated when it starts: the
//! pointers in its `.data.rel.ro` and its GOT (vtables, function pointers,
//! the addresses in constant tables) are written then, and the segment
//! that holds them (`PT_GNU_RELRO`) is meant to be made read-only right
//! after, so that a stray write can never redirect a call through them.
//! glibc's start does that for a static-pie; musl's (cloche links musl:
//! docs/architecture.md, *Why these choices*) relocates and leaves the
//! segment writable for the life of the process. [`protect`] makes it
//! read-only, as glibc would have: the first thing each binary's `main`
//! does, before any other code of cloche's runs or any thread exists.

/// Makes the executable's `PT_GNU_RELRO` pages read-only (the whole pages
/// inside it; the partial last one is shared with writable data and stays
/// as it is, as with glibc). Returns the range made read-only, or the
/// error of `mprotect`; `Ok(None)` when the executable has no such segment.
pub fn protect() -> std::io::Result<Option<(usize, usize)>> {
    let mut found: Option<(usize, usize)> = None;
    // SAFETY: dl_iterate_phdr calls `first` with the loaded objects'
    // headers, valid during the call; `found` outlives it.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut found as *mut Option<(usize, usize)>).cast()) };
    let Some((start, end)) = found else { return Ok(None) };
    // SAFETY: the range is page-aligned and lies in the executable's own
    // mapping, holding data that nothing writes after relocation.
    if unsafe { libc::mprotect(start as *mut libc::c_void, end - start, libc::PROT_READ) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((start, end)))
}

/// The callback for the first object (the executable itself, in a static
/// program the only one): its `PT_GNU_RELRO` range, whole pages only.
extern "C" fn first(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `info` is valid for the call; `data` is the Option passed
    // above; `dlpi_phdr` holds `dlpi_phnum` headers.
    unsafe {
        let info = &*info;
        let found = &mut *(data as *mut Option<(usize, usize)>);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        for i in 0..usize::from(info.dlpi_phnum) {
            let ph = &*info.dlpi_phdr.add(i);
            if ph.p_type == libc::PT_GNU_RELRO {
                let start = (info.dlpi_addr as usize + ph.p_vaddr as usize) & !(page - 1);
                let end = (info.dlpi_addr as usize + ph.p_vaddr as usize + ph.p_memsz as usize) & !(page - 1);
                *found = (end > start).then_some((start, end));
            }
        }
    }
    1 // the executable only
}
