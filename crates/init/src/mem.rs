//! memcpy, memmove, memset, memcmp, bcmp and strlen: the compiler may emit calls to
//! them, and this binary links no C library. Byte loops with volatile
//! accesses, so the compiler cannot turn them back into calls to themselves.
//! pid 1 copies a few hundred bytes in its whole life; speed is irrelevant.

use core::ptr::{read_volatile, write_volatile};

/// # Safety
/// As C's memcpy.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid.
    unsafe { memmove(dst, src, n) }
}

/// # Safety
/// As C's memmove.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; the copy
    // direction handles overlap.
    unsafe {
        if (dst as usize) < (src as usize) {
            for i in 0..n {
                write_volatile(dst.add(i), read_volatile(src.add(i)));
            }
        } else {
            for i in (0..n).rev() {
                write_volatile(dst.add(i), read_volatile(src.add(i)));
            }
        }
    }
    dst
}

/// # Safety
/// As C's memset.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        for i in 0..n {
            write_volatile(dst.add(i), c as u8);
        }
    }
    dst
}

/// # Safety
/// As C's memcmp.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller guarantees both ranges are valid.
    unsafe {
        for i in 0..n {
            let (x, y) = (read_volatile(a.add(i)), read_volatile(b.add(i)));
            if x != y {
                return x as i32 - y as i32;
            }
        }
    }
    0
}

/// # Safety
/// As C's bcmp.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C's strlen.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a NUL-terminated string.
    unsafe {
        while read_volatile(s.add(n)) != 0 {
            n += 1;
        }
    }
    n
}
