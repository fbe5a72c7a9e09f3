//! The integration tests of the MQTT codec, one binary: real client bytes (`corpus`), one test
//! per rule a malformed packet can break (`malformed`), the limits at their boundaries
//! (`limits`), topic matching against the spec's examples (`topic`), property tests
//! (`roundtrip`) and the module-docs check (`tidy`). The binary counts allocations, so
//! "decoding never allocates more than the limits allow" is checked, not assumed.

mod corpus;
mod limits;
mod malformed;
mod roundtrip;
mod tidy;
mod topic;

use bytes::Bytes;
use tidewater_mqtt::{DecodeError, Limits, Packet, ProtocolVersion};

/// Records the largest single allocation (or reallocation) made on each thread, so a test can
/// measure what one `decode` call asked for.
struct MeasuringAllocator;

thread_local! {
    // A const-initialised `Cell<usize>` needs neither lazy initialisation nor a destructor, so
    // touching it from inside the allocator cannot allocate or recurse.
    static LARGEST_ALLOCATION_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the only addition is bookkeeping in a thread-local `Cell`, which does not allocate.
unsafe impl std::alloc::GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`alloc_zeroed`/`realloc` above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, passed through.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: MeasuringAllocator = MeasuringAllocator;

/// Decodes `frame` and returns the result with the largest single allocation made meanwhile.
fn decode_measured(
    frame: Bytes,
    version: ProtocolVersion,
    limits: &Limits,
) -> (Result<Packet, DecodeError>, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let result = tidewater_mqtt::decode(frame, version, limits);
    let largest = LARGEST_ALLOCATION_BYTES.with(|largest| largest.get());
    (result, largest)
}

/// Bytes from hex, ignoring whitespace and `#` comment lines (the corpus file format).
fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.bytes())
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or_else(|_| panic!("not hex: {pair:?}"));
            u8::from_str_radix(text, 16).unwrap_or_else(|_| panic!("not hex: {text}"))
        })
        .collect()
}

/// Decodes one whole packet with the default limits.
fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    tidewater_mqtt::decode(Bytes::copy_from_slice(bytes), version, &Limits::default())
}
