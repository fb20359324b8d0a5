//! Work over a list on a few threads, results in list order.

/// `f(0)`, ..., `f(total - 1)` on up to `threads` threads (at least 1), each index taken once from a
/// shared counter; the results come back in index order, so they do not depend on the thread count or
/// the scheduling when `f(i)` depends only on `i`.
pub fn parallel_map<T: Send>(
    total: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<T>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, total.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let r = f(i);
                **slots[i].lock().expect("no thread panics holding a slot") = Some(r);
            });
        }
    });
    drop(slots);
    results
        .into_iter()
        .map(|r| r.expect("every index was taken"))
        .collect()
}
