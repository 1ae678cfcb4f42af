//! A counting global allocator for this test binary: the net heap bytes a closure leaves
//! allocated on its own thread (what it allocated and did not free), for tests that bound
//! what a structure really holds. Other threads and other tests are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// `Some(net bytes)` while this thread is being measured.
    static NET: Cell<Option<i64>> = const { Cell::new(None) };
}

fn count(delta: i64) {
    // `try_with`: nothing is counted while the thread's locals are being torn down.
    let _ = NET.try_with(|net| {
        if let Some(n) = net.get() {
            net.set(Some(n + delta));
        }
    });
}

// SAFETY: every call is passed to `System` unchanged; the counting only reads the layout.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: `ptr` came from `System` with this layout (every allocation here does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: as `dealloc` and `alloc`: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the net bytes it left allocated on this thread.
pub fn net_bytes<T>(f: impl FnOnce() -> T) -> (T, i64) {
    NET.with(|net| net.set(Some(0)));
    let out = f();
    let bytes = NET.with(|net| net.take()).expect("measured");
    (out, bytes)
}
