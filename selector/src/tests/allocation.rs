//! Matching allocates nothing: counted by a test-only global allocator, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::{message, parse};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting allocations made by the current thread.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the count is a plain
// thread-local cell with a const initializer, so counting itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_while(run: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    run();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn matching_does_not_allocate() {
    let message = message();
    let selectors = [
        "name = 'James' AND count > 5 OR NOT (ratio <= 2.5)",
        "JMSPriority BETWEEN 1 AND 9 AND count NOT BETWEEN 20 AND 30",
        "name IN ('Bob', 'James', 'Gromit', 'Wallace', 'Shaun', 'Preston')",
        "name NOT IN ('Bob') AND missing IN ('x') IS NULL",
        "special LIKE 'a.b%[f]%' AND name NOT LIKE '!_%' ESCAPE '!'",
        "(count + 2) * 3 - ratio / 4 % 3 > -count AND 2147483647 + 1 < 0",
        "-99999999999999999999 < 99999999999999999999 AND price <> 12",
        "convert_string_expressions:price > 10 AND priceText > 10.0 AND yes = TRUE",
        "unicode > name AND quote < name AND trueProp AND NOT falseProp",
    ];
    for text in selectors {
        let selector = parse(text);
        assert!(selector.matches(&message), "{text}");
        assert_eq!(
            allocations_while(|| {
                selector.matches(&message);
            }),
            0,
            "{text}"
        );
    }
    // Concatenation, an ActiveMQ extension, is the one operation that builds a string.
    let concatenation = parse("name + '!' = 'James!'");
    assert!(allocations_while(|| assert!(concatenation.matches(&message))) > 0);
}
